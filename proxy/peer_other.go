//go:build !linux

package proxy

import (
	"net"
	"syscall"
)

// peerClosed is not available off Linux: a vanished client is noticed at
// the next write instead.
func peerClosed(syscall.RawConn) bool { return false }

// rawConn has nothing to poll off Linux.
func rawConn(net.Conn) syscall.RawConn { return nil }

// socketCheck has nothing to poll off Linux.
type socketCheck struct{}

func newSocketCheck(net.Conn) *socketCheck { return nil }

func (*socketCheck) peerClosed() bool { return false }
