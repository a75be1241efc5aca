package proxy

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// maxBufferedBody is the largest response body of known length read
// whole; larger ones and chunked ones stream.
const maxBufferedBody = 64 << 10

// upstreamClient is the keep-alive connection pool to one upstream
// (scheme and host); routes naming the same upstream share it.
type upstreamClient struct {
	hc     *fasthttp.HostClient
	dialer *net.Dialer
	tls    *tls.Config
	isTLS  bool
}

func newUpstreamClient(cfg *Config, scheme, host string, timeout time.Duration) *upstreamClient {
	addr := host
	if _, _, err := net.SplitHostPort(host); err != nil {
		if scheme == "https" {
			addr = net.JoinHostPort(trimBrackets(host), "443")
		} else {
			addr = net.JoinHostPort(trimBrackets(host), "80")
		}
	}
	uc := &upstreamClient{
		dialer: &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		isTLS:  scheme == "https",
	}
	if cfg.TLSClientConfig != nil {
		uc.tls = cfg.TLSClientConfig.Clone()
	} else {
		uc.tls = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	uc.hc = &fasthttp.HostClient{
		Addr:                addr,
		IsTLS:               uc.isTLS,
		TLSConfig:           uc.tls,
		Dial:                uc.dial,
		MaxConns:            cfg.MaxConnsPerHost,
		MaxConnWaitTimeout:  timeout,
		MaxIdleConnDuration: cfg.IdleConnTimeout,
		StreamResponseBody:  true,
		// Bodies up to this size are read whole (the fast path for API
		// answers); larger ones, and all chunked ones, are streamed.
		// Without a limit fasthttp would read any body of known length
		// into memory before returning.
		MaxResponseBodySize:      maxBufferedBody,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
		// Retries only idempotent requests whose body is in memory, and
		// only when a pooled connection turned out to be closed.
		MaxIdemponentCallAttempts: 2,
	}
	return uc
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

// dial connects to the upstream and wraps the connection so that
// Forward can find it again from the response (see trackedConn).
func (uc *upstreamClient) dial(addr string) (net.Conn, error) {
	c, err := uc.dialer.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	tc.addr = &connAddr{Addr: c.LocalAddr(), conn: tc}
	return tc, nil
}

// trackedConn lets Forward lift the read deadline fasthttp sets for the
// whole response once the response headers are in.
//
// HostClient applies a request's timeout as a connection read deadline
// that stays in force while a streamed body is read, which would cut
// every event stream and long download at Route.Timeout. fasthttp gives
// no handle on the connection behind a response except its addresses, so
// LocalAddr answers a connAddr that points back to the connection; after
// DoTimeout returns, Forward clears the deadline through it. (A TLS
// connection reports the LocalAddr of the connection it wraps, this one.)
type trackedConn struct {
	net.Conn
	addr *connAddr
}

func (c *trackedConn) LocalAddr() net.Addr { return c.addr }

type connAddr struct {
	net.Addr
	conn *trackedConn
}

// clearReadDeadline removes the read deadline of the connection resp was
// read from, if it is one of ours.
func clearReadDeadline(resp *fasthttp.Response) {
	if a, ok := resp.LocalAddr().(*connAddr); ok {
		_ = a.conn.Conn.SetReadDeadline(time.Time{})
	}
}
