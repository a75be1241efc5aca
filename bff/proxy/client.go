package proxy

import (
	"crypto/tls"
	"net"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/bffgate/bffgate/internal/upstream"
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

func newUpstreamClient(cfg *Config, m *metrics, scheme, host string, timeout, idle time.Duration) *upstreamClient {
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
		Addr:               addr,
		IsTLS:              uc.isTLS,
		TLSConfig:          uc.tls,
		Dial:               upstream.Dial(uc.dial),
		MaxConns:           cfg.MaxConnsPerHost,
		MaxConnWaitTimeout: timeout,
		// Under the upstream's own keep-alive timeout, so that the pool
		// drops a connection before the upstream closes it.
		MaxIdleConnDuration: idle,
		StreamResponseBody:  true,
		// Bodies up to this size are read whole (the fast path for API
		// answers); larger ones, and all chunked ones, are streamed.
		// Without a limit fasthttp would read any body of known length
		// into memory before returning.
		MaxResponseBodySize:      maxBufferedBody,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
	}
	// An idempotent request whose body is in memory is sent once more,
	// on a new connection, when a reused one turns out to be closed
	// before the answer began (see internal/upstream).
	label := scheme + "://" + host
	upstream.Configure(uc.hc, func([]byte) { m.retried(label) })
	return uc
}

func trimBrackets(h string) string {
	if len(h) > 1 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

// dial connects to the upstream; upstream.Dial wraps the connection so
// that Forward can find it again from the response (clearReadDeadline)
// and a failure can tell a reused connection from a fresh one.
func (uc *upstreamClient) dial(addr string) (net.Conn, error) {
	return uc.dialer.Dial("tcp", addr)
}

// clearReadDeadline removes the read deadline of the connection resp was
// read from, if it is one of ours.
//
// HostClient applies a request's timeout as a connection read deadline
// that stays in force while a streamed body is read, which would cut
// every event stream and long download at Route.Timeout. fasthttp gives
// no handle on the connection behind a response except its addresses,
// which upstream.Conn makes lead back to it; before a streamed body is
// handed to fiber, Forward clears the deadline through it (a body read
// whole needs nothing more from the connection).
func clearReadDeadline(resp *fasthttp.Response) {
	if c, ok := upstream.ConnOf(resp); ok {
		_ = c.SetReadDeadline(time.Time{}) // through the Conn, which keeps the deadline in force
	}
}
