package bff

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// rawGet sends a request line byte for byte (no client normalises it)
// and returns the status and body.
func rawGet(t *testing.T, gw, target string) (int, string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(gw, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nX-CSRF: 1\r\n\r\n", target, strings.TrimPrefix(gw, "http://"))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Content-Type"), string(b)
}

// TestAPIPathRefusedBeforeMatching: a path segment that upstream servers
// treat as traversal is 400 JSON before route matching, for API routes
// and for paths the SPA handler would serve alike; the upstream sees
// nothing.
func TestAPIPathRefusedBeforeMatching(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	for _, target := range []string{
		"/svc/..;/internal/admin",
		"/svc/%2e%2e;/internal/admin",
		"/svc/%252e%252e/internal/admin",
		"/svc/a%2Fb",
		"/svc/../pub/x",
		"/app/..;/x",
		"/static/%5c..%5cetc",
	} {
		status, ct, body := rawGet(t, e.gwURL, target)
		if status != 400 || !strings.HasPrefix(ct, "application/json") || !strings.Contains(body, `"error":"invalid_path"`) {
			t.Errorf("GET %s: %d %s %s, want 400 invalid_path JSON", target, status, ct, body)
		}
	}
	e.upstream.mu.Lock()
	n := len(e.upstream.seen)
	e.upstream.mu.Unlock()
	if n != 0 {
		t.Errorf("the upstream received %d refused requests", n)
	}
}

// TestAPIForwardedHostFromPublicURL: the upstream's X-Forwarded-Host is
// the public URL's host whatever Host header the client sends, and
// identity headers a client sets never reach it.
func TestAPIForwardedHostFromPublicURL(t *testing.T) {
	t.Parallel()
	type seen struct{ xfh, xfp, user, email string }
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-User"), r.Header.Get("X-Auth-Request-Email")}
	}))
	defer up.Close()
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) {
		c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/rec/", Upstream: up.URL}, Policy: PolicyNone})
		c.Proxy.TrustedProxies = []string{"127.0.0.1"} // identity headers are dropped from trusted peers too
	}})
	req, _ := http.NewRequest("GET", e.gwURL+"/rec/x", nil)
	req.Host = "attacker.example"
	req.Header.Set("X-CSRF", "1")
	req.Header.Set("X-Forwarded-User", "admin")
	req.Header.Set("X-Auth-Request-Email", "admin@example.com")
	res, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	s := <-got
	if want := strings.TrimPrefix(e.gwURL, "http://"); s.xfh != want || s.xfp != "http" {
		t.Errorf("X-Forwarded-Host %q, -Proto %q; want %q, http (from public_url)", s.xfh, s.xfp, want)
	}
	if s.user != "" || s.email != "" {
		t.Errorf("identity headers reached the upstream: %+v", s)
	}
}

// TestAPIRequestBodyAsItCame: a gzip body and a multipart upload reach
// the upstream byte for byte with their headers (the gateway decodes
// neither), and a body over the route's max_body_bytes is 413 JSON
// without reaching it.
func TestAPIRequestBodyAsItCame(t *testing.T) {
	t.Parallel()
	type seen struct {
		body     []byte
		enc, typ string
	}
	got := make(chan seen, 4)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{b, r.Header.Get("Content-Encoding"), r.Header.Get("Content-Type")}
	}))
	defer up.Close()
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) {
		c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/up/", Upstream: up.URL, MaxBodyBytes: 1 << 20}, Policy: PolicyNone})
	}})

	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	_, _ = zw.Write(bytes.Repeat([]byte(`{"title":"compressible"}`), 50000))
	_ = zw.Close()
	var mbuf bytes.Buffer
	mw := multipart.NewWriter(&mbuf)
	fw, _ := mw.CreateFormFile("file", "photo.bin")
	_, _ = fw.Write(bytes.Repeat([]byte{0xff, 0x00, 0x7f}, 100000))
	_ = mw.WriteField("caption", "a photo")
	_ = mw.Close()

	for _, tc := range []struct {
		name, enc, typ string
		body           []byte
	}{
		{"gzip", "gzip", "application/json", zbuf.Bytes()},
		{"multipart", "", mw.FormDataContentType(), mbuf.Bytes()},
	} {
		req, _ := http.NewRequest("POST", e.gwURL+"/up/items", bytes.NewReader(tc.body))
		req.Header.Set("X-CSRF", "1")
		req.Header.Set("Content-Type", tc.typ)
		if tc.enc != "" {
			req.Header.Set("Content-Encoding", tc.enc)
		}
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("%s: %d", tc.name, res.StatusCode)
		}
		s := <-got
		if !bytes.Equal(s.body, tc.body) || s.enc != tc.enc || s.typ != tc.typ {
			t.Errorf("%s: the upstream got %d bytes (%q, %q), want the %d bytes sent (%q, %q)",
				tc.name, len(s.body), s.enc, s.typ, len(tc.body), tc.enc, tc.typ)
		}
	}

	// Over the limit, declared and chunked.
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(make([]byte, 3<<20))
		if chunked {
			body = io.LimitReader(zerosReader{}, 3<<20)
		}
		req, _ := http.NewRequest("POST", e.gwURL+"/up/items", body)
		req.Header.Set("X-CSRF", "1")
		res, err := testhttp.Client.Do(req)
		if err != nil {
			// The rest of the body is discarded before the answer: the
			// client reads the 413 rather than a reset connection.
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 413 || !strings.Contains(string(b), `"error":"request_too_large"`) {
			t.Errorf("chunked=%v: %d %s, want 413 request_too_large", chunked, res.StatusCode, b)
		}
		select {
		case s := <-got:
			if len(s.body) >= 3<<20 {
				t.Errorf("chunked=%v: the upstream received the whole %d-byte body", chunked, len(s.body))
			}
			if !chunked {
				t.Errorf("a declared body over the limit reached the upstream (%d bytes)", len(s.body))
			}
		case <-time.After(300 * time.Millisecond):
		}
	}
}

type zerosReader struct{}

func (zerosReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// wsEcho is a WebSocket upstream that verifies the bearer token of the
// handshake against the issuer's keys (of the env e points to once it
// exists) and echoes "sub: message".
func wsEcho(t *testing.T, e *atomic.Pointer[env]) (*httptest.Server, *atomic.Int64) {
	var dialled atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dialled.Add(1)
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "no token", http.StatusUnauthorized)
			return
		}
		idt, err := e.Load().upstream.verifier.Verify(r.Context(), tok)
		if err != nil {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		conn, err := (&websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(mt, []byte(idt.Subject+": "+string(msg))); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &dialled
}

// TestAPIWebSocket: an upgrade through a user route is checked by Origin
// (same origin or allowed_origins; none, or another, is refused) and by
// the session (none is 401), never by the anti-CSRF header a browser
// cannot add; then the session's token reaches the upstream.
func TestAPIWebSocket(t *testing.T) {
	t.Parallel()
	var ep atomic.Pointer[env]
	echo, dialled := wsEcho(t, &ep)
	e := newEnv(t, kindBolt, envOptions{gateway: func(c *Config) {
		c.AllowedOrigins = []string{"https://app.example.com"}
		c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/ws/", Upstream: echo.URL}, Policy: PolicyUser})
	}})
	ep.Store(e)
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	wsURL := "ws" + strings.TrimPrefix(e.gwURL, "http") + "/ws/socket"

	dial := func(origin, cookie string) (*websocket.Conn, *http.Response, error) {
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		if cookie != "" {
			hdr.Set("Cookie", cookie)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return (&websocket.Dialer{}).DialContext(ctx, wsURL, hdr)
	}
	for _, tc := range []struct {
		name, origin string
		session      bool
		status       int
		code         string
	}{
		{"no Origin", "", true, 403, "origin_missing"},
		{"another origin", "https://evil.example", true, 403, "cross_site_request"},
		{"same site, another port", "http://127.0.0.1:1", true, 403, "cross_site_request"},
		{"no session", e.gwURL, false, 401, "login_required"},
	} {
		before := dialled.Load()
		cookie := ""
		if tc.session {
			cookie = b.cookieHeader()
		}
		conn, res, err := dial(tc.origin, cookie)
		if err == nil {
			conn.Close()
			t.Errorf("%s: the upgrade was accepted", tc.name)
			continue
		}
		if res == nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(body), `"error":"`+tc.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", tc.name, res.StatusCode, body, tc.status, tc.code)
		}
		if dialled.Load() != before {
			t.Errorf("%s: the upstream was dialled", tc.name)
		}
	}

	for _, origin := range []string{e.gwURL, "https://app.example.com"} {
		conn, res, err := dial(origin, b.cookieHeader())
		if err != nil {
			status := 0
			if res != nil {
				status = res.StatusCode
			}
			t.Fatalf("Origin %s with a session: %v (%d)", origin, err, status)
		}
		if err := conn.WriteMessage(websocket.TextMessage, []byte("ping")); err != nil {
			t.Fatal(err)
		}
		_, msg, err := conn.ReadMessage()
		conn.Close()
		if err != nil || string(msg) != "user-alice: ping" {
			t.Errorf("Origin %s: echo %q (%v), want the upstream to have verified alice's token", origin, msg, err)
		}
	}
}

// TestAPIRefusalKeepsConnectionInStep: a request the gateway refuses
// before reading its body (here the anti-CSRF rule) does not leave the
// body on the connection to be read as the next request.
func TestAPIRefusalKeepsConnectionInStep(t *testing.T) {
	t.Parallel()
	e := newEnv(t, kindBolt, envOptions{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.gwURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	// More than fasthttp reads before the handler, then a whole request.
	inner := strings.Repeat("a", 64<<10) + "GET /pub/smuggled HTTP/1.1\r\nHost: gw\r\nX-CSRF: 1\r\n\r\n"
	fmt.Fprintf(conn, "POST /pub/x HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n\r\n%s", len(inner), inner)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("POST without X-CSRF: %v %v", res, err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if res, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("the refused request's body was served as a request: %d", res.StatusCode)
	}
	e.upstream.mu.Lock()
	defer e.upstream.mu.Unlock()
	for _, s := range e.upstream.seen {
		if strings.Contains(s.Path, "smuggled") {
			t.Errorf("the upstream received the request hidden in the body: %+v", s)
		}
	}
}
