package upstream

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestFreshConnectionClosedIsNotRetried: a server that reads each request
// and closes the connection without answering. The request fails on a
// fresh connection, which is not a stale pooled one: it is not sent
// again, and the error says the connection was new.
func TestFreshConnectionClosedIsNotRetried(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				_, _ = http.ReadRequest(bufio.NewReader(c))
			}()
		}
	}()
	hc := &fasthttp.HostClient{Addr: ln.Addr().String()}
	Configure(hc, func([]byte) { t.Error("a request was retried") })
	for i := range 3 {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + ln.Addr().String() + "/x")
		err := hc.DoTimeout(req, resp, 5*time.Second)
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		var ce *ClosedError
		if !errors.As(err, &ce) || ce.Reused {
			t.Fatalf("GET %d to a server that closes without answering: %v, want a ClosedError on a new connection", i, err)
		}
		if got := accepted.Load(); got != int64(i+1) {
			t.Fatalf("after %d GETs the server accepted %d connections, want %d: a failure on a new connection is not retried", i+1, got, i+1)
		}
	}
}

func TestIdempotent(t *testing.T) {
	t.Parallel()
	for m, want := range map[string]bool{
		"GET": true, "HEAD": true, "OPTIONS": true, "TRACE": true, "PUT": true, "DELETE": true,
		"POST": false, "PATCH": false, "CONNECT": false, "get": false,
	} {
		if got := Idempotent([]byte(m)); got != want {
			t.Errorf("Idempotent(%q) = %v, want %v", m, got, want)
		}
	}
}

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	reads, writes []time.Time
}

func (d *deadlineConn) SetReadDeadline(t time.Time) error { d.reads = append(d.reads, t); return nil }
func (d *deadlineConn) SetWriteDeadline(t time.Time) error {
	d.writes = append(d.writes, t)
	return nil
}
func (d *deadlineConn) LocalAddr() net.Addr { return &net.TCPAddr{} }

// TestDeadlinesCoalesced: a deadline a little after the one in force
// keeps it (the timeout is at most a sixteenth short), anything else
// reaches the connection: an earlier one, a much later one, clearing, and
// the first after clearing.
func TestDeadlinesCoalesced(t *testing.T) {
	t.Parallel()
	d := &deadlineConn{}
	c := Track(d)
	now := time.Now()
	steps := []struct {
		at   time.Time
		sent bool
	}{
		{now.Add(30 * time.Second), true},
		{now.Add(30*time.Second + 500*time.Millisecond), false}, // 0.5 s later, within 30 s / 16
		{now.Add(33 * time.Second), true},                       // 3 s later: over 33 s / 16
		{now.Add(10 * time.Second), true},                       // earlier
		{time.Time{}, true},                                     // cleared
		{now.Add(10 * time.Second), true},                       // the first after clearing
		{now.Add(10*time.Second + 10*time.Millisecond), false},
	}
	for i, s := range steps {
		n := len(d.reads)
		if err := c.SetReadDeadline(s.at); err != nil {
			t.Fatal(err)
		}
		if sent := len(d.reads) > n; sent != s.sent {
			t.Errorf("read deadline step %d (%v): reached the connection %v, want %v", i, s.at, sent, s.sent)
		}
	}
	// The write deadline is kept apart from the read one.
	if err := c.SetWriteDeadline(now.Add(30 * time.Second)); err != nil || len(d.writes) != 1 {
		t.Errorf("first write deadline: %d sent (%v), want 1", len(d.writes), err)
	}
	if err := c.SetDeadline(now.Add(30*time.Second + time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if len(d.writes) != 1 || !d.reads[len(d.reads)-1].Equal(now.Add(30*time.Second+time.Millisecond)) {
		t.Errorf("SetDeadline: writes %v, last read %v", d.writes, d.reads[len(d.reads)-1])
	}
}
