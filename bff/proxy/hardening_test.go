package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// rawResult is a response read off a raw connection.
type rawResult struct {
	status int
	header http.Header
	body   string
	close  bool // Connection: close
	err    error
}

// rawRequest sends head (a request line and header lines, without the
// blank line) to addr and writes body from a goroutine while the answer
// is read, as a client streaming an upload does. The request line goes
// out byte for byte: no client library normalises the path.
func rawRequest(t *testing.T, gw, head string, body func(io.Writer)) rawResult {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, strings.ReplaceAll(head, "\n", "\r\n")+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if body != nil {
		go body(conn)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return rawResult{err: err}
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	return rawResult{status: res.StatusCode, header: res.Header, body: string(b), close: res.Close}
}

// countingUpstream counts the requests that reach it.
type countingUpstream struct {
	*httptest.Server
	n atomic.Int64
}

func newCountingUpstream(t *testing.T) *countingUpstream {
	u := &countingUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.n.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(u.Close)
	return u
}

// TestTraversalSegmentsRefused sends, byte for byte, paths that Tomcat,
// Jetty, Spring or a double-decoding upstream would resolve above the
// route: every one is 400 JSON and the upstream sees nothing.
func TestTraversalSegmentsRefused(t *testing.T) {
	t.Parallel()
	up := newCountingUpstream(t)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/svc/", Upstream: up.URL}}})
	// Forward itself refuses them, whatever route the caller matched
	// (package bff also calls CheckPath before it matches).
	rt, _ := p.Match("/svc/")
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: true})
	app.Use(func(c *fiber.Ctx) error { return p.Forward(c, rt, "route-token") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(2 * time.Second) })
	gw := "http://" + ln.Addr().String()
	for _, path := range []string{
		"/svc/..;/internal/admin",
		"/svc/.;/internal/admin",
		"/svc/..;jsessionid=1/internal/admin",
		"/svc/%2e%2e;/internal/admin",
		"/svc/%2e%2e/internal/admin",
		"/svc/%252e%252e/internal/admin",
		"/svc/x/../../internal/admin",
		"/svc/./internal",
		"/svc/..%2finternal/admin",
		"/svc/a%2Fb",
		"/svc/a%252Fb",
		"/svc/a%5Cb",
		"/svc/..%5cinternal",
		"/svc/..%20/internal",
		"/svc/;x/internal",
	} {
		r := rawRequest(t, gw, "GET "+path+" HTTP/1.1\nHost: gw.example", nil)
		if r.err != nil || r.status != 400 || !strings.Contains(r.body, `"error":"invalid_path"`) ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s: %d %s (%v), want 400 invalid_path JSON", path, r.status, r.body, r.err)
		}
	}
	if n := up.n.Load(); n != 0 {
		t.Errorf("the upstream received %d of the refused requests", n)
	}
	// The refusal names the rule.
	r := rawRequest(t, gw, "GET /svc/..;/internal/admin HTTP/1.1\nHost: gw.example", nil)
	if !strings.Contains(r.body, ". or .. segment") {
		t.Errorf("refusal does not say why: %s", r.body)
	}
}

// TestSpoofedHeadersStripped sends every forwarding and identity header
// of spoofableHeaders (and a few variants) from an untrusted and from a
// trusted peer, and checks what the upstream received.
func TestSpoofedHeadersStripped(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rc.record(r) }))
	defer up.Close()

	spoofed := map[string]string{
		"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
		"X-Forwarded-Port": "8443", "X-Forwarded-Prefix": "/admin", "X-Forwarded-Ssl": "on",
		"X-Forwarded-Server": "evil", "X-Forwarded-Uri": "/admin", "X-Forwarded-Method": "DELETE",
		"X-Forwarded-Scheme": "https", "X-Forwarded": "for=6.6.6.6", "Forwarded": "for=6.6.6.6;host=evil.example",
		"X-Original-Url": "/admin", "X-Rewrite-Url": "/admin", "X-Original-Uri": "/admin",
		"X-Original-Host": "evil.example", "X-Host": "evil.example", "True-Client-Ip": "6.6.6.6",
		"X-Real-Ip": "6.6.6.6", "X-Client-Ip": "6.6.6.6", "X-Cluster-Client-Ip": "6.6.6.6",
		"Cf-Connecting-Ip": "6.6.6.6", "Fastly-Client-Ip": "6.6.6.6", "Front-End-Https": "on",
		"X-Forwarded-User": "admin", "X-Forwarded-Email": "admin@example.com", "X-Forwarded-Groups": "admins",
		"X-Forwarded-Preferred-Username": "admin", "X-Forwarded-Access-Token": "forged",
		"X-Auth-Request-User": "admin", "X-Auth-Request-Email": "admin@example.com",
		"X-Auth-Request-Access-Token": "forged", "X-Remote-User": "admin", "X-Remote-Group": "system:masters",
		"Remote-User": "admin", "Remote-Groups": "admins", "X-Webauth-User": "admin",
		"X-Pomerium-Jwt-Assertion": "forged", "X-Goog-Authenticated-User-Email": "admin@example.com",
		"X-Amzn-Oidc-Identity": "admin", "X-Ms-Client-Principal-Name": "admin", "Cf-Access-Jwt-Assertion": "forged",
		"X-Authentik-Username": "admin", "X-Vouch-User": "admin", "X-Consumer-Username": "admin",
		"X-Userinfo": "e30", "X-Id-Token": "forged", "X-Access-Token": "forged",
	}
	// What a trusted proxy's headers turn into; the rest is dropped from
	// everyone.
	trustedKept := map[string]string{
		"X-Forwarded-For": "6.6.6.6, 127.0.0.1",
		"Forwarded":       "for=6.6.6.6;host=evil.example, for=127.0.0.1",
		"X-Real-Ip":       "6.6.6.6",
	}
	for _, tc := range []struct {
		name    string
		trusted []string
	}{
		{"untrusted", nil},
		{"trusted", []string{"127.0.0.0/8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newProxy(t, Config{
				Routes:         []Route{{Prefix: "/api", Upstream: up.URL}},
				TrustedProxies: tc.trusted,
				PublicURL:      "https://app.example.com",
			})
			gw := startGateway(t, p, false, "tok", "")
			req, _ := http.NewRequest("GET", gw+"/api/x", nil)
			req.Host = "attacker.example" // the Host header a client chooses
			for k, v := range spoofed {
				req.Header.Set(k, v)
			}
			req.Header.Set("X-Custom", "passes")
			res, err := testhttp.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			h, _, _ := rc.seen()
			for k := range spoofed {
				want := ""
				switch k {
				case "X-Forwarded-For":
					want = "127.0.0.1"
				case "X-Forwarded-Host":
					want = "app.example.com"
				case "X-Forwarded-Proto":
					want = "https"
				}
				if tc.trusted != nil && trustedKept[k] != "" {
					want = trustedKept[k]
				}
				if got := strings.Join(h.Values(k), ","); got != want {
					t.Errorf("%s reached the upstream as %q, want %q", k, got, want)
				}
			}
			if h.Get("X-Custom") != "passes" {
				t.Errorf("an ordinary header was dropped too")
			}
		})
	}
}

// TestBodyLimitContentLength: a declared Content-Length over the route's
// max_body_bytes is 413 JSON and the upstream is never contacted. The
// rest of the body is discarded first, so that the connection stays in
// step; past lingerBytes the answer comes at once and the connection is
// closed, never read on as the next request.
func TestBodyLimitContentLength(t *testing.T) {
	t.Parallel()
	up := newCountingUpstream(t)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL, MaxBodyBytes: 1 << 20}}})
	gw := startGateway(t, p, true, "tok", "")
	for _, tc := range []struct {
		name     string
		declared int
		body     func(io.Writer)
		close    bool
	}{
		{"20 MB sent whole", 20 << 20, func(w io.Writer) { _, _ = io.Copy(w, io.LimitReader(zeros{}, 20<<20)) }, false},
		{"1 GB declared, 8 KiB sent", 1 << 30, prefetch, true},
	} {
		r := rawRequest(t, gw, fmt.Sprintf("POST /api/upload HTTP/1.1\nHost: gw\nContent-Length: %d", tc.declared), tc.body)
		if r.err != nil || r.status != 413 || !strings.Contains(r.body, `"error":"request_too_large"`) ||
			!strings.Contains(r.body, "1048576 bytes") || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: %d %s (%v), want 413 request_too_large JSON naming the limit", tc.name, r.status, r.body, r.err)
		}
		if r.close != tc.close {
			t.Errorf("%s: Connection: close %v, want %v", tc.name, r.close, tc.close)
		}
	}

	// A body the proxy did not read is never read as a request: the
	// bytes after the declared length's first 8 KiB hold one.
	smuggled := "GET /api/smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	inner := strings.Repeat("a", 2<<20) + smuggled
	fmt.Fprintf(conn, "POST /api/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 413 {
		t.Fatalf("smuggling attempt: %v %v", res, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if res, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("the body was read as a second request: %d", res.StatusCode)
	}
	// Exactly the limit passes.
	res, err = testhttp.Client.Post(gw+"/api/upload", "application/octet-stream", bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("a body of exactly max_body_bytes: %d", res.StatusCode)
	}
	if n := up.n.Load(); n != 1 {
		t.Errorf("the upstream saw %d requests, want only the one within the limit", n)
	}
}

// prefetch writes the first 8 KiB of a body: what fasthttp reads (and
// waits for) before it calls the handler of a streamed request. The rest
// of a declared body is never sent: the answer must not wait for it.
func prefetch(w io.Writer) { _, _ = w.Write(make([]byte, 8<<10)) }

// chunkedUpload writes a chunked body of n bytes in 32 KiB chunks,
// stopping at the first write error (the gateway closing the connection).
func chunkedUpload(n int) func(io.Writer) {
	return func(w io.Writer) {
		chunk := make([]byte, 32<<10)
		size := []byte(fmt.Sprintf("%x\r\n", len(chunk)))
		crlf := []byte("\r\n")
		for sent := 0; sent < n; sent += len(chunk) {
			for _, b := range [][]byte{size, chunk, crlf} {
				if _, err := w.Write(b); err != nil {
					return
				}
			}
		}
		_, _ = io.WriteString(w, "0\r\n\r\n")
	}
}

// TestBodyLimitChunked: a chunked body is counted as it streams; past
// the limit the upstream request is aborted (the upstream reads a
// truncated body and an error, never a complete request) and the
// browser gets 413 JSON.
func TestBodyLimitChunked(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	type seen struct {
		n   int64
		err error
	}
	got := make(chan seen, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		got <- seen{n, err}
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL, MaxBodyBytes: limit}}})
	gw := startGateway(t, p, true, "tok", "")

	r := rawRequest(t, gw, "PUT /api/upload HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked", chunkedUpload(20<<20))
	if r.err != nil || r.status != 413 || !strings.Contains(r.body, `"error":"request_too_large"`) {
		t.Fatalf("chunked 20 MB over a 1 MiB limit: %d %s (%v), want 413", r.status, r.body, r.err)
	}
	select {
	case s := <-got:
		if s.err == nil || s.n > limit {
			t.Errorf("the upstream read %d bytes and error %v: want at most %d bytes and a truncated body", s.n, s.err, limit)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream request was neither completed nor aborted")
	}
	// PUT is idempotent: no second attempt may reach the upstream (with
	// the stream consumed it would be a complete request, body empty).
	select {
	case s := <-got:
		t.Errorf("a second attempt reached the upstream: %d bytes, error %v", s.n, s.err)
	case <-time.After(200 * time.Millisecond):
	}

	// Within the limit, the chunked body arrives whole.
	res, err := testhttp.Client.Post(gw+"/api/upload", "application/octet-stream", io.LimitReader(zeros{}, limit))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if s := <-got; res.StatusCode != 200 || s.err != nil || s.n != limit {
		t.Errorf("chunked body of exactly the limit: %d, upstream read %d (%v)", res.StatusCode, s.n, s.err)
	}
}

// TestBodyLimitParallelMemory: eight oversized uploads at once (four
// chunked, four with Content-Length) are all refused, and the gateway,
// upstream and clients of this process allocate far less than the 160 MB
// offered.
func TestBodyLimitParallelMemory(t *testing.T) {
	const limit = 2 << 20
	up := newCountingUpstream(t)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL, MaxBodyBytes: limit}}})
	gw := startGateway(t, p, true, "tok", "")

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	results := make([]rawResult, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				results[i] = rawRequest(t, gw, "POST /api/upload HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked", chunkedUpload(20<<20))
			} else {
				results[i] = rawRequest(t, gw, fmt.Sprintf("POST /api/upload HTTP/1.1\nHost: gw\nContent-Length: %d", 20<<20), func(w io.Writer) {
					_, _ = io.Copy(w, io.LimitReader(zeros{}, 20<<20))
				})
			}
		}()
	}
	wg.Wait()
	runtime.ReadMemStats(&after)
	for i, r := range results {
		if r.err != nil || r.status != 413 {
			t.Errorf("upload %d: %d (%v), want 413", i, r.status, r.err)
		}
	}
	d := after.TotalAlloc - before.TotalAlloc
	t.Logf("8 oversized uploads refused: %.1f MB allocated in the process", float64(d)/(1<<20))
	if d > 24<<20 {
		t.Errorf("%d MB allocated while 8 oversized uploads were refused: bodies were buffered", d>>20)
	}
}

// TestCompressedBodyPassesRaw: a gzip request body reaches the upstream
// as the same compressed bytes with its Content-Encoding; the gateway
// never decodes it (in memory or streamed).
func TestCompressedBodyPassesRaw(t *testing.T) {
	t.Parallel()
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	_, _ = zw.Write(bytes.Repeat([]byte(`{"item":"compressible"}`), 20000))
	_ = zw.Close()
	compressed := zbuf.Bytes()

	type seen struct {
		body []byte
		enc  string
	}
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{b, r.Header.Get("Content-Encoding")}
	}))
	defer up.Close()
	for _, maxInMemory := range []int{1 << 20, 1 << 10} {
		p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}, MaxRequestBodySize: maxInMemory})
		gw := startGateway(t, p, true, "tok", "")
		req, _ := http.NewRequest("POST", gw+"/api/items", bytes.NewReader(compressed))
		req.Header.Set("Content-Encoding", "gzip")
		req.Header.Set("Content-Type", "application/json")
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		s := <-got
		if !bytes.Equal(s.body, compressed) || s.enc != "gzip" {
			t.Errorf("in-memory limit %d: the upstream got %d bytes with Content-Encoding %q, want the %d compressed bytes with gzip",
				maxInMemory, len(s.body), s.enc, len(compressed))
		}
	}
}

// TestWebSocketOrigins: a handshake without an Origin, or with one not in
// WebSocketOrigins, is refused before the upstream is dialled; a listed
// origin (not the gateway's host) is accepted.
func TestWebSocketOrigins(t *testing.T) {
	t.Parallel()
	var dialled atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dialled.Add(1)
		conn, err := (&websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		mt, msg, err := conn.ReadMessage()
		if err == nil {
			_ = conn.WriteMessage(mt, msg)
		}
	}))
	defer up.Close()
	p := newProxy(t, Config{
		Routes:           []Route{{Prefix: "/ws", Upstream: up.URL}},
		WebSocketOrigins: []string{"https://app.example.com", "http://LOCALHOST:3000/"},
	})
	gw := startGateway(t, p, false, "tok", "")
	wsURL := "ws" + strings.TrimPrefix(gw, "http") + "/ws/socket"
	for _, tc := range []struct {
		name, origin string
		ok           bool
	}{
		{"no Origin", "", false},
		{"another site", "https://evil.example", false},
		{"the gateway's host, not listed", gw, false},
		{"listed", "https://app.example.com", true},
		{"listed, other case", "http://localhost:3000", true},
		{"null", "null", false},
	} {
		before := dialled.Load()
		hdr := http.Header{}
		if tc.origin != "" {
			hdr.Set("Origin", tc.origin)
		}
		conn, res, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).Dial(wsURL, hdr)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
				continue
			}
			_ = conn.WriteMessage(websocket.TextMessage, []byte("hi"))
			if _, m, err := conn.ReadMessage(); err != nil || string(m) != "hi" {
				t.Errorf("%s: echo %q %v", tc.name, m, err)
			}
			conn.Close()
			continue
		}
		if err == nil {
			conn.Close()
			t.Errorf("%s: handshake accepted", tc.name)
			continue
		}
		if res == nil || res.StatusCode != 403 {
			t.Errorf("%s: %v (%v), want 403", tc.name, err, res)
		}
		if dialled.Load() != before {
			t.Errorf("%s: the upstream was dialled", tc.name)
		}
	}
}

// TestMalformedChunkedBody: a chunked body the browser breaks off with a
// malformed chunk is the client's mistake: 400 invalid_body, not a 502
// blaming the upstream (which sees a truncated body).
func TestMalformedChunkedBody(t *testing.T) {
	t.Parallel()
	got := make(chan error, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}})
	gw := startGateway(t, p, true, "tok", "")
	r := rawRequest(t, gw, "POST /api/upload HTTP/1.1\nHost: gw\nTransfer-Encoding: chunked", func(w io.Writer) {
		_, _ = io.WriteString(w, "10\r\n0123456789abcdef\r\nzz\r\n")
	})
	if r.err != nil || r.status != 400 || !strings.Contains(r.body, `"error":"invalid_body"`) {
		t.Errorf("malformed chunk: %d %s (%v), want 400 invalid_body", r.status, r.body, r.err)
	}
	if err := <-got; err == nil {
		t.Errorf("the upstream read a complete body")
	}
}

// TestCutOffBodyNotForwarded: a browser that stops sending a body of
// declared length (small enough to be read into memory before it is
// sent) gets 400 invalid_body, and the upstream sees no request: the
// short body is never sent on as a complete one.
func TestCutOffBodyNotForwarded(t *testing.T) {
	t.Parallel()
	up := newCountingUpstream(t)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}})
	gw := startGateway(t, p, true, "tok", "")
	r := rawRequest(t, gw, "POST /api/upload HTTP/1.1\nHost: gw\nContent-Length: 100000", func(w io.Writer) {
		_, _ = w.Write(bytes.Repeat([]byte("a"), 50000))
		_ = w.(*net.TCPConn).CloseWrite()
	})
	if r.err != nil || r.status != 400 || !strings.Contains(r.body, `"error":"invalid_body"`) {
		t.Errorf("cut-off body: %d %s (%v), want 400 invalid_body", r.status, r.body, r.err)
	}
	if n := up.n.Load(); n != 0 {
		t.Errorf("the upstream received %d requests, want none", n)
	}
}

// recordingUpstream is a raw HTTP/1.1 server that keeps each request's
// head (request line and header lines, as received) and body, and answers
// 200 on the same connection, counting the connections it accepted.
type recordingUpstream struct {
	addr  string
	mu    sync.Mutex
	heads []string
	bodys []string
	conns atomic.Int64
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	u := &recordingUpstream{addr: ln.Addr().String()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			u.conns.Add(1)
			go u.serve(conn)
		}
	}()
	return u
}

func (u *recordingUpstream) serve(conn net.Conn) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		var head bytes.Buffer
		fmt.Fprintf(&head, "%s %s %s\nHost: %s\n", req.Method, req.RequestURI, req.Proto, req.Host)
		_ = req.Header.Write(&head)
		if req.TransferEncoding != nil {
			fmt.Fprintf(&head, "Transfer-Encoding: %s\n", strings.Join(req.TransferEncoding, ","))
		}
		if req.ContentLength >= 0 && req.Method != http.MethodGet {
			fmt.Fprintf(&head, "Content-Length: %d\n", req.ContentLength)
		}
		b, _ := io.ReadAll(req.Body)
		u.mu.Lock()
		u.heads = append(u.heads, strings.ReplaceAll(head.String(), "\r\n", "\n"))
		u.bodys = append(u.bodys, string(b))
		u.mu.Unlock()
		if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

func (u *recordingUpstream) last() (string, string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.heads) == 0 {
		return "", ""
	}
	return u.heads[len(u.heads)-1], u.bodys[len(u.bodys)-1]
}

// TestForwardedRequestFraming: the upstream request is the proxy's own,
// whatever the browser's framing was. An HTTP/1.0 request with
// Connection: close and fields it names as hop-by-hop goes upstream as
// HTTP/1.1 on the kept-alive connection, without those fields; a chunked
// body declaring a trailer arrives whole, framed by the proxy, without
// the Trailer field; the Host is the upstream's; a header the route does
// not drop passes, each of its lines.
func TestForwardedRequestFraming(t *testing.T) {
	t.Parallel()
	up := newRecordingUpstream(t)
	gateways := 0
	// Without and with a header block over maxCopiedHeaders: the
	// upstream request is a copy of the first, built field by field
	// from the second.
	for _, pad := range []string{"", "\nX-Pad: " + strings.Repeat("p", maxCopiedHeaders)} {
		for _, stream := range []bool{false, true} {
			p := newProxy(t, Config{Routes: []Route{{Prefix: "/api/", Upstream: "http://" + up.addr}}})
			gw := startGateway(t, p, stream, "tok", "")
			gateways++
			r := rawRequest(t, gw, "GET /api/a?x=1 HTTP/1.0\nHost: gw.example\nConnection: close, X-Hop\nX-Hop: secret\nX-Keep: one\nX-Keep: two\nConnection: Keep-Alive\nKeep-Alive: timeout=5"+pad, nil)
			if r.err != nil || r.status != 200 {
				t.Fatalf("stream=%v: HTTP/1.0 GET: %d %v", stream, r.status, r.err)
			}
			head, _ := up.last()
			for _, want := range []string{"GET /api/a?x=1 HTTP/1.1\n", "Host: " + up.addr + "\n", "Authorization: Bearer tok\n", "X-Keep: one\nX-Keep: two\n"} {
				if !strings.Contains(head, want) {
					t.Errorf("stream=%v: the upstream's request lacks %q:\n%s", stream, want, head)
				}
			}
			for _, banned := range []string{"X-Hop", "Connection", "Keep-Alive", "\nHost: gw.example", "Content-Length", "Transfer-Encoding"} {
				if strings.Contains(head, banned) {
					t.Errorf("stream=%v: the upstream's request carries %q:\n%s", stream, banned, head)
				}
			}
			r = rawRequest(t, gw, "POST /api/b HTTP/1.1\nHost: gw.example\nTransfer-Encoding: chunked\nTrailer: X-Sum\nContent-Type: text/plain"+pad, func(w io.Writer) {
				_, _ = io.WriteString(w, "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
			})
			if r.err != nil || r.status != 200 {
				t.Fatalf("stream=%v: chunked POST: %d %v", stream, r.status, r.err)
			}
			head, body := up.last()
			if body != "hello world" {
				t.Errorf("stream=%v: the upstream read body %q, want %q", stream, body, "hello world")
			}
			for _, banned := range []string{"Trailer", "X-Sum", "\nHost: gw.example"} {
				if strings.Contains(head, banned) {
					t.Errorf("stream=%v: the upstream's request carries %q:\n%s", stream, banned, head)
				}
			}
			if !strings.Contains(head, "Content-Type: text/plain\n") || !strings.HasPrefix(head, "POST /api/b HTTP/1.1\n") {
				t.Errorf("stream=%v: the upstream's request:\n%s", stream, head)
			}
			// A field folded over two lines (obsolete line folding, RFC
			// 9112 §5.2) goes upstream on one line, after the fields
			// before it; over maxCopiedHeaders the raw block is not split
			// by the proxy then, but visited through fasthttp.
			r = rawRequest(t, gw, "GET /api/c HTTP/1.1\nHost: gw.example\nX-Before: b\nX-Fold: one\n two\nX-After: a"+pad, nil)
			if r.err != nil || r.status != 200 {
				t.Fatalf("stream=%v: folded GET: %d %v", stream, r.status, r.err)
			}
			head, _ = up.last()
			if !strings.Contains(head, "X-Fold: one two\n") || !strings.Contains(head, "X-Before: b\n") || !strings.Contains(head, "X-After: a\n") {
				t.Errorf("stream=%v: the upstream's request of a folded field:\n%s", stream, head)
			}
		}
	}
	// Three requests per gateway on one connection each: the browser's
	// Connection: close never closed a pooled upstream connection.
	if n := up.conns.Load(); n != int64(gateways) {
		t.Errorf("the upstream accepted %d connections for %d requests through %d gateways, want %d (one kept alive each)", n, 3*gateways, gateways, gateways)
	}
}
