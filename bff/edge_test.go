package bff

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/edge/edgetest"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// TestEdge runs the listener contract of internal/edge against the
// gateway over TCP: ambiguous framing refused, parse errors answered and
// logged without the request's bytes (an HttpOnly cookie, a forged
// Authorization trailer), compressed bodies 415 without inflating them,
// and /metrics intact after mixed methods and paths in parallel (the
// gateway's labels pointed into fasthttp's reused buffers: "GETT"). Not
// parallel: it measures the process's allocations.
func TestEdge(t *testing.T) {
	logs := &edgetest.LogBuffer{}
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	edgetest.Run(t, edgetest.Listener{
		Addr:     strings.TrimPrefix(e.gwURL, "http://"),
		Log:      logs.String,
		BodyPath: "/bff/backchannel-logout",
		WantCode: "unsupported_media_type",
		Paths:    []string{"/bff/user", "/api/who", "/pub/who", "/", "/app/page", "/bff/nothing"},
		Metrics:  "/metrics",
	})
}

// TestMetricsRouteLabels: proxied API calls are counted under their
// configured route prefix and SPA files under "spa", not "unmatched".
func TestMetricsRouteLabels(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindCookie, envOptions{})
	for _, p := range []string{"/api/who", "/pub/who", "/app/page", "/bff/user"} {
		resp, err := testhttp.Client.Get(e.gwURL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := testhttp.Client.Get(e.gwURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	text := string(b)
	for _, want := range []string{`route="/api/"`, `route="/pub/"`, `route="spa"`, `route="/bff/user"`} {
		if !strings.Contains(text, "bffgate_http_requests_total{component=\"gateway\",method=\"GET\","+want) {
			t.Errorf("/metrics has no request series with %s", want)
		}
	}
	if strings.Contains(text, `route="unmatched"`) {
		t.Errorf("requests to configured routes were counted as unmatched")
	}
}

// postChunked sends a chunked POST of size bytes of form data to url's
// host and returns the status of the answer (0 when the server reset the
// connection before it could be read).
func postChunked(t *testing.T, addr, path string, size int) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	go func() {
		fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n", path, addr)
		const n = 64 << 10
		frame := []byte(fmt.Sprintf("%x\r\n%s\r\n", n, strings.Repeat("a", n)))
		for sent := 0; sent < size; sent += n {
			if _, err := conn.Write(frame); err != nil {
				return // the server answered and closed
			}
		}
		_, _ = io.WriteString(conn, "0\r\n\r\n")
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestBackchannelLogoutBodyBounded: the back-channel logout endpoint reads
// a few KiB of form, not the stream: c.FormValue read a 300 MB chunked
// POST whole (0.9 GB). Past the limit it answers 413 JSON.
func TestBackchannelLogoutBodyBounded(t *testing.T) {
	e := newEnv(t, kindCookie, envOptions{})
	addr := strings.TrimPrefix(e.gwURL, "http://")

	status, body := postChunked(t, addr, "/bff/backchannel-logout", 20<<10)
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, `"error":"request_too_large"`) {
		t.Fatalf("a 20 KiB back-channel logout body: %d %s, want 413 request_too_large", status, body)
	}

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, body := postChunked(t, addr, "/bff/backchannel-logout", 50<<20); status != 0 && status != http.StatusRequestEntityTooLarge {
				t.Errorf("a 50 MiB back-channel logout body: %d %s, want 413", status, body)
			}
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&ms)
	grew := ms.TotalAlloc - before
	t.Logf("8 parallel 50 MiB chunked posts: %d KiB allocated", grew>>10)
	if grew > 32<<20 {
		t.Errorf("8 parallel 50 MiB chunked posts made the process allocate %d MiB; the body is not bounded", grew>>20)
	}
}

// A proxied API request body reaches the upstream as it came: a
// compressed one is neither decoded nor refused (the upstream owns its
// encodings), whether fasthttp buffered it or streamed it.
func TestProxiedBodyForwardedAsSent(t *testing.T) {
	t.Parallel()
	type seen struct {
		encoding string
		sum      [32]byte
		n        int
	}
	got := make(chan seen, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Get("Content-Encoding"), sha256.Sum256(b), len(b)}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, kindCookie, envOptions{gateway: func(c *Config) {
		c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/raw/", Upstream: up.URL}, Policy: PolicyNone})
	}})
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = zw.Write(bytes.Repeat([]byte("0123456789abcdef"), 1<<16))
	_ = zw.Close()
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			var body io.Reader = bytes.NewReader(zipped.Bytes())
			if chunked {
				body = io.MultiReader(body) // unknown length: sent chunked
			}
			req, _ := http.NewRequest(http.MethodPost, e.gwURL+"/raw/upload", body)
			req.Header.Set("Content-Encoding", "gzip")
			req.Header.Set("Content-Type", "application/octet-stream")
			req.Header.Set("X-CSRF", "1")
			resp, err := testhttp.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("status %d", resp.StatusCode)
			}
			s := <-got
			if s.encoding != "gzip" || s.sum != sha256.Sum256(zipped.Bytes()) {
				t.Fatalf("the upstream got %d bytes with Content-Encoding %q, not the %d gzip bytes sent", s.n, s.encoding, zipped.Len())
			}
		})
	}
}

// A chunked body the proxy streamed to the upstream to its end keeps the
// connection open: the edge closes only connections whose body was left
// unread.
func TestProxiedChunkedKeepsConnection(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindCookie, envOptions{})
	addr := strings.TrimPrefix(e.gwURL, "http://")
	body := strings.Repeat("z", 32<<10)
	one := fmt.Sprintf("POST /pub/up HTTP/1.1\r\nHost: %s\r\nX-CSRF: 1\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", addr, len(body), body)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	for i := range 2 {
		if _, err := io.WriteString(conn, one); err != nil {
			t.Fatalf("call %d: write: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("call %d on the same connection: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("call %d: status %d, connection close %v", i, resp.StatusCode, resp.Close)
		}
	}
}

// A malformed chunked body on a proxied API call is the client's mistake:
// 400 JSON, not a 502 blaming the upstream, and neither the answer nor the
// log quotes its trailer (fasthttp's error text named the invalid trailer
// key, credential included, and the proxy logged it).
func TestProxiedMalformedBody(t *testing.T) {
	logs := &edgetest.LogBuffer{}
	e := newEnv(t, kindCookie, envOptions{gateway: func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	addr := strings.TrimPrefix(e.gwURL, "http://")
	for name, trailer := range map[string]string{
		"forbidden_trailer":   "Authorization: Bearer " + edgetest.ForgedBearer,
		"invalid_trailer_key": "Authorization Bearer " + edgetest.ForgedBearer + ": x",
		"bad_chunk":           "",
	} {
		t.Run(name, func(t *testing.T) {
			chunks := "3\r\nabc\r\n0\r\n" + trailer + "\r\n\r\n"
			if trailer == "" {
				chunks = "3\r\nabc\r\nzz" + edgetest.ForgedBearer + "\r\n"
			}
			raw := fmt.Sprintf("POST /pub/up HTTP/1.1\r\nHost: %s\r\nX-CSRF: 1\r\nCookie: s=%s\r\nTransfer-Encoding: chunked\r\n\r\n%s", addr, edgetest.CookieSecret, chunks)
			r := edgetest.Exchange(t, addr, raw)
			if r.Status != http.StatusBadRequest || !strings.Contains(r.Body, `"error":"invalid_body"`) {
				t.Errorf("answer %d %s, want 400 invalid_body", r.Status, r.Body)
			}
			if !r.Closed {
				t.Errorf("the connection stayed open after a malformed body")
			}
			for _, secret := range []string{edgetest.CookieSecret, edgetest.ForgedBearer} {
				if edgetest.Reflects(r.Raw, secret) || edgetest.Reflects(logs.String(), secret) {
					t.Errorf("the answer or the log shows %s", secret)
				}
			}
		})
	}
}
