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
