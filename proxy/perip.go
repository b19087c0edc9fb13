package proxy

import (
	"net"
	"sync"
)

// perIPListener caps the connections one client address holds open
// (server.max_conns_per_ip): a connection over the cap is closed as soon as
// it is accepted. Sluice's own rather than fasthttp's MaxConnsPerIP, whose
// connection wrapper hides the socket from the checks that a client is
// still there (rawConn); this one hands it out with NetConn.
type perIPListener struct {
	net.Listener
	max int
	mu  sync.Mutex
	// open counts the connections held per address.
	open map[string]int
}

func newPerIPListener(ln net.Listener, max int) *perIPListener {
	return &perIPListener{Listener: ln, max: max, open: make(map[string]int)}
}

// Accept returns the next connection whose address is under the cap.
func (l *perIPListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		if l.open[ip] >= l.max {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.open[ip]++
		l.mu.Unlock()
		return &perIPConn{Conn: c, l: l, ip: ip}, nil
	}
}

// remoteIP is c's remote address without its port.
func remoteIP(c net.Conn) string {
	a := c.RemoteAddr().String()
	if host, _, err := net.SplitHostPort(a); err == nil {
		return host
	}
	return a
}

// perIPConn gives its address's place back when closed, once.
type perIPConn struct {
	net.Conn
	l    *perIPListener
	ip   string
	once sync.Once
}

// NetConn is the accepted connection, for rawConn.
func (c *perIPConn) NetConn() net.Conn { return c.Conn }

func (c *perIPConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if n := c.l.open[c.ip] - 1; n > 0 {
			c.l.open[c.ip] = n
		} else {
			delete(c.l.open, c.ip)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
