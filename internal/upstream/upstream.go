// Package upstream is what the gateway's two fasthttp clients, the API
// proxy (bff/proxy) and the SPA dev-server proxy (bff/spa), do alike about
// kept-alive connections to the servers behind them.
//
// An HTTP/1.1 server may close an idle kept-alive connection at any time
// (RFC 9112 §9.8); Node's http server, and so Vite's dev server, does
// after 5 s. A client that pools a connection longer sends its next
// request into a socket the server is closing, and reads nothing back.
// Two defences, both here:
//
//   - Pools close idle connections sooner than the upstream does: the
//     callers set fasthttp's MaxIdleConnDuration under the upstream's
//     keep-alive timeout (4 s by default, configurable).
//   - A request that fails on a reused connection before the first byte
//     of the answer is sent once more on a fresh connection, when its
//     method is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE,
//     PUT, DELETE) and its body is in memory: a server that closed the
//     connection cannot have acted on a request it never read, and RFC
//     9110 §9.2.2 allows an idempotent request to be retried anyway. The
//     pool's other idle connections are closed first: fasthttp hands out
//     the most recently used connection (LIFO), so every other idle one
//     has been idle at least as long and is as likely to be dead, and
//     without this the retry would take one of them (which is how twelve
//     parallel GETs after a pause got 502s before).
//
// A request that fails on a fresh connection, after part of the answer,
// or with a streamed body is not retried; the error says which it was
// (ClosedError), so that a 502 names the real cause.
package upstream

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// DefaultIdleTimeout is how long the gateway keeps an idle upstream
// connection by default: under the 5 s after which Node's http server
// (Vite's dev server, most Express and Nest APIs) closes one.
const DefaultIdleTimeout = 4 * time.Second

// Conn is a pooled upstream connection that counts its round trips, so
// that a failure can tell a reused connection from a fresh one. Its
// LocalAddr answers an *Addr that leads back to it: fasthttp offers no
// other handle on the connection behind a Response than its addresses.
type Conn struct {
	net.Conn
	addr  *Addr
	trips atomic.Int64
	// rd and wd are the deadlines in force (zero: none); see
	// SetReadDeadline. A Conn serves one request at a time.
	rd, wd time.Time
}

// SetReadDeadline implements net.Conn. fasthttp's client sets a read and a
// write deadline on its connection before every request, and each one
// moves a runtime timer: about a thousand instructions per proxied call,
// a few per cent of the gateway's own work (issue 20). A deadline asked
// for less than a sixteenth of its distance from now after the one in
// force keeps that one, so a request's timeout is at most a sixteenth
// shorter than asked, never longer; an earlier deadline, a much later one
// and clearing (the zero time) apply at once. fasthttp's server coalesces
// its connection deadlines the same way.
func (c *Conn) SetReadDeadline(t time.Time) error {
	return setDeadline(&c.rd, t, c.Conn.SetReadDeadline)
}

// SetWriteDeadline implements net.Conn, as SetReadDeadline.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	return setDeadline(&c.wd, t, c.Conn.SetWriteDeadline)
}

// SetDeadline implements net.Conn: both deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func setDeadline(cur *time.Time, t time.Time, set func(time.Time) error) error {
	if !t.IsZero() && !cur.IsZero() && !t.Before(*cur) && t.Sub(*cur) < time.Until(t)/16 {
		return nil
	}
	if err := set(t); err != nil {
		*cur = time.Time{} // unknown: the next one applies
		return err
	}
	*cur = t
	return nil
}

// Addr is the local address of a Conn, pointing back to it.
type Addr struct {
	net.Addr
	Conn *Conn
}

// Track wraps a freshly dialled connection.
func Track(c net.Conn) *Conn {
	tc := &Conn{Conn: c}
	tc.addr = &Addr{Addr: c.LocalAddr(), Conn: tc}
	return tc
}

// LocalAddr implements net.Conn. (A TLS connection over a Conn reports
// the LocalAddr of the connection it wraps, this one.)
func (c *Conn) LocalAddr() net.Addr { return c.addr }

// Dial wraps dial so that every connection it returns is a *Conn.
func Dial(dial fasthttp.DialFunc) fasthttp.DialFunc {
	return func(addr string) (net.Conn, error) {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		return Track(c), nil
	}
}

// ConnOf returns the Conn resp was read from, if it was one.
func ConnOf(resp *fasthttp.Response) (*Conn, bool) {
	a, ok := resp.LocalAddr().(*Addr)
	if !ok || a.Conn == nil {
		return nil, false
	}
	return a.Conn, true
}

// ClosedError is a request that failed because the upstream closed the
// connection (or reset it) before it sent the first byte of an answer.
type ClosedError struct {
	// Reused is true when the connection had served earlier requests: it
	// was kept alive and the upstream closed it while idle.
	Reused bool
	// Err is fasthttp's error: io.EOF for nothing read, or the write's.
	Err error
}

func (e *ClosedError) Error() string {
	if e.Reused {
		return fmt.Sprintf("the upstream closed the kept-alive connection before answering (%v)", e.Err)
	}
	return fmt.Sprintf("the upstream closed a new connection before answering (%v)", e.Err)
}

func (e *ClosedError) Unwrap() error { return e.Err }

// Configure sets up hc for the retry described in the package doc: its
// Dial must return *Conn (see Dial), which Configure arranges when
// hc.Dial is nil by wrapping fasthttp's dialer (DialDualStack as hc
// asks). It replaces hc's Transport, RetryIfErr and
// MaxIdemponentCallAttempts. onRetry, when not nil, is called each time a
// request is sent again (for a metric or a log line: frequent retries say
// the idle timeout is longer than the upstream's).
func Configure(hc *fasthttp.HostClient, onRetry func(method []byte)) {
	if hc.Dial == nil {
		dial := fasthttp.Dial
		if hc.DialDualStack {
			dial = fasthttp.DialDualStack
		}
		hc.Dial = Dial(dial)
	}
	hc.Transport = transport{}
	// One retry: the transport asks for it only after a reused
	// connection failed before the answer began, on an idempotent
	// request. fasthttp itself skips requests with a streamed body.
	hc.MaxIdemponentCallAttempts = 2
	hc.RetryIfErr = func(req *fasthttp.Request, attempts int, err error) (resetTimeout, retry bool) {
		var ce *ClosedError
		retry = errors.As(err, &ce) && ce.Reused && Idempotent(req.Header.Method())
		if retry && onRetry != nil {
			onRetry(req.Header.Method())
		}
		return false, retry
	}
}

// transport is fasthttp's own, telling which failures happened on a
// reused connection before the first byte of the answer.
type transport struct{}

func (transport) RoundTrip(hc *fasthttp.HostClient, req *fasthttp.Request, resp *fasthttp.Response) (bool, error) {
	retry, err := fasthttp.DefaultTransport.RoundTrip(hc, req, resp)
	// The response holds the connection's addresses from the moment it
	// was taken from the pool, success or not (and none when no
	// connection could be had: a dial error is never retried).
	conn, tracked := ConnOf(resp)
	reused := false
	if tracked {
		reused = conn.trips.Add(1) > 1
	}
	if err == nil {
		return false, nil
	}
	if !retry || !beforeFirstByte(err) {
		return false, err
	}
	if reused {
		// The other idle connections are older than this one (LIFO):
		// drop them, so that the retry dials.
		hc.CloseIdleConnections()
	}
	return reused, &ClosedError{Reused: reused, Err: err}
}

// beforeFirstByte reports whether a round trip's error means the upstream
// sent nothing: fasthttp returns exactly io.EOF when the connection ended
// (or failed) before the first byte of the response, and a write error
// means the request did not even leave.
func beforeFirstByte(err error) bool {
	if err == io.EOF {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "write"
}

// Idempotent reports whether method is idempotent (RFC 9110 §9.2.2), and
// so may be sent again after a connection failed.
func Idempotent(method []byte) bool {
	switch string(method) {
	case fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodOptions, fasthttp.MethodTrace,
		fasthttp.MethodPut, fasthttp.MethodDelete:
		return true
	}
	return false
}
