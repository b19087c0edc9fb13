package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"

	"sluice/config"
)

// upstreamDialer returns how an upstream's connections are opened (base is
// its parsed base_url): dial opens the raw connection to addr ("host:port"),
// directly or through the egress proxy's CONNECT tunnel, within
// timeouts.connect; tlsConfig is the TLS client run over it for an https
// upstream (upstreams[].tls; nil for http and for the defaults; clientTLS
// adds the server name and the session cache). Errors are the configuration's
// or the environment's (unreadable certificates, a proxy URL that does not
// parse or is not http://).
//
// Whether to use a proxy is decided here, once, from base: fasthttp only
// ever dials the base_url's own address.
func upstreamDialer(c *config.Upstream, base *url.URL) (dial func(addr string) (net.Conn, error), tlsConfig *tls.Config, err error) {
	if base.Scheme == "https" {
		if tlsConfig, err = c.TLS.ClientConfig(); err != nil {
			return nil, nil, fmt.Errorf("tls: %w", err)
		}
	}
	proxyURL, err := egressProxy(c.Proxy, base, envProxy)
	if err != nil {
		return nil, nil, err
	}
	d := &dialer{
		net:     net.Dialer{KeepAlive: 30 * time.Second},
		timeout: c.Timeouts.Connect,
	}
	if proxyURL != nil {
		d.proxy = canonicalAddr(proxyURL)
		if u := proxyURL.User; u != nil {
			pass, _ := u.Password()
			d.proxyAuth = "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username()+":"+pass))
		}
	}
	return d.dial, tlsConfig, nil
}

// envProxy is the proxy the environment gives for u: HTTPS_PROXY for https,
// HTTP_PROXY for http (or their lower-case names), none for the hosts in
// NO_PROXY, for "localhost" and for loopback addresses. net/http reads the
// environment once per process.
func envProxy(u *url.URL) (*url.URL, error) {
	return http.ProxyFromEnvironment(&http.Request{URL: u})
}

// egressProxy is the proxy an upstream at base connects through (nil:
// directly): setting is upstreams[].proxy ("" asks fromEnv, "off" is none).
func egressProxy(setting string, base *url.URL, fromEnv func(*url.URL) (*url.URL, error)) (*url.URL, error) {
	switch setting {
	case config.ProxyOff:
		return nil, nil
	case "":
		name := "HTTPS_PROXY"
		if base.Scheme == "http" {
			name = "HTTP_PROXY"
		}
		u, err := fromEnv(&url.URL{Scheme: base.Scheme, Host: base.Host})
		if err != nil {
			// net/http's error quotes the value, password included.
			return nil, fmt.Errorf("%s (or its lower-case name): not a proxy URL (http://[user:pass@]host:port)", name)
		}
		if u == nil {
			return nil, nil
		}
		p, err := config.ParseProxy(u.String())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return p, nil
	default:
		p, err := config.ParseProxy(setting)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		return p, nil
	}
}

// canonicalAddr is an http proxy URL's host:port (port default 80).
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// dialer opens an upstream's raw connections.
type dialer struct {
	net net.Dialer
	// timeout bounds a whole dial, the proxy's CONNECT answer included.
	timeout time.Duration
	// proxy is the egress proxy's host:port ("" dials directly);
	// proxyAuth is its Proxy-Authorization value ("" sends none).
	proxy, proxyAuth string
}

// dial connects to addr, directly or through a CONNECT tunnel. The
// connection it returns is the TCP connection itself (the tunnel carries
// bytes unchanged once the proxy said 200), so its socket can be polled.
func (d *dialer) dial(addr string) (net.Conn, error) {
	var deadline time.Time
	if d.timeout > 0 {
		deadline = time.Now().Add(d.timeout)
	}
	nd := d.net
	nd.Deadline = deadline
	if d.proxy == "" {
		return nd.Dial("tcp", addr)
	}
	conn, err := nd.Dial("tcp", d.proxy)
	if err != nil {
		return nil, fmt.Errorf("egress proxy %s: %w", d.proxy, err)
	}
	if err := d.connect(conn, addr, deadline); err != nil {
		_ = conn.Close()
		return nil, err
	}
	return conn, nil
}

// errProxyExtraBytes fails a tunnel whose proxy sent bytes after its
// CONNECT answer, before the upstream could have said anything.
var errProxyExtraBytes = errors.New("sent bytes after its CONNECT answer")

// connect asks the proxy on conn for a tunnel to addr and reads its answer,
// all before deadline.
func (d *dialer) connect(conn net.Conn, addr string, deadline time.Time) error {
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	req := "CONNECT " + addr + " HTTP/1.1\r\nHost: " + addr + "\r\n"
	if d.proxyAuth != "" {
		req += "Proxy-Authorization: " + d.proxyAuth + "\r\n"
	}
	if _, err := conn.Write([]byte(req + "\r\n")); err != nil {
		return fmt.Errorf("egress proxy %s: CONNECT %s: %w", d.proxy, addr, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return fmt.Errorf("egress proxy %s: CONNECT %s: reading its answer: %w", d.proxy, addr, err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &proxyRefusedError{Proxy: d.proxy, Addr: addr, Status: resp.Status, StatusCode: resp.StatusCode}
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("egress proxy %s: CONNECT %s: %w", d.proxy, addr, errProxyExtraBytes)
	}
	return conn.SetDeadline(time.Time{})
}

// proxyRefusedError is an egress proxy's answer other than 200 to CONNECT.
type proxyRefusedError struct {
	// Proxy is the proxy's host:port, Addr the upstream's.
	Proxy, Addr string
	// Status is the proxy's status line ("407 Proxy Authentication
	// Required"), StatusCode its code.
	Status     string
	StatusCode int
}

func (e *proxyRefusedError) Error() string {
	s := fmt.Sprintf("egress proxy %s refused CONNECT %s: %s", e.Proxy, e.Addr, e.Status)
	if e.StatusCode == http.StatusProxyAuthRequired {
		s += " (check the user:password of the proxy URL)"
	}
	return s
}
