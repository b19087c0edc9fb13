package proxy

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the peer of a connection has closed it, without
// reading: poll for POLLRDHUP, which a pending request (pipelining, a
// keep-alive) does not raise but a close or reset does. MSG_PEEK alone would
// miss a close that follows unread data.
func peerClosed(raw syscall.RawConn) bool {
	closed := false
	_ = raw.Control(func(fd uintptr) {
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
		n, err := unix.Poll(fds[:], 0)
		closed = err == nil && n > 0 && fds[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	})
	return closed
}

// socketCheck is peerClosed for one socket that is checked many times (an
// upstream connection before each reuse): its poll function is bound once,
// so a check allocates nothing. Not for concurrent use.
type socketCheck struct {
	raw    syscall.RawConn
	closed bool
	poll   func(fd uintptr)
}

// newSocketCheck checks c's socket; nil when c has none to poll.
func newSocketCheck(c net.Conn) *socketCheck {
	raw := rawConn(c)
	if raw == nil {
		return nil
	}
	k := &socketCheck{raw: raw}
	k.poll = func(fd uintptr) {
		// An idle HTTP/1.1 connection has nothing to read: bytes waiting
		// (POLLIN) are a TLS close_notify that came before the FIN, or an
		// unsolicited answer such as a 408: the connection is done either
		// way.
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP | unix.POLLIN}}
		n, err := unix.Poll(fds[:], 0)
		k.closed = err == nil && n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0
	}
	return k
}

// peerClosed is peerClosed(raw) for the checked socket; false for nil.
func (k *socketCheck) peerClosed() bool {
	if k == nil {
		return false
	}
	k.closed = false
	_ = k.raw.Control(k.poll)
	return k.closed
}

// rawConn is the socket under a client connection (plain, per-IP wrapped
// or TLS), or nil when there is none to poll.
func rawConn(c net.Conn) syscall.RawConn {
	for range 3 { // TLS over a per-address wrapper over the socket
		nc, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = nc.NetConn()
	}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}
