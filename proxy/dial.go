package proxy

import (
	"crypto/tls"
	"net"
	"net/url"
	"time"

	"sluice/config"
)

func upstreamDialer(c *config.Upstream, base *url.URL) (dial func(addr string) (net.Conn, error), tlsConfig *tls.Config, err error) {
	d := &net.Dialer{Timeout: c.Timeouts.Connect, KeepAlive: 30 * time.Second}
	return func(addr string) (net.Conn, error) { return d.Dial("tcp", addr) }, nil, nil
}
