package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
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
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// startGateway serves p on a loopback port with a handler that matches
// the route and forwards with bearer; a 401 invalid_token is retried once
// with retryBearer when it is not empty (what package bff does after a
// refresh), and answered with the caller's 401 session_expired when
// retryBearer is "refresh-fails".
func startGateway(t testing.TB, p *Proxy, streamBody bool, bearer, retryBearer string) string {
	t.Helper()
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: streamBody, BodyLimit: 256 << 20})
	app.All("/*", func(c *fiber.Ctx) error {
		r, ok := p.Match(c.Path())
		if !ok {
			return c.Status(404).JSON(fiber.Map{"error": "not_found"})
		}
		src := &testTokens{bearer: bearer, renewed: retryBearer}
		err := p.ForwardWith(c, r, src)
		if errors.Is(err, errTestRefreshFailed) {
			return c.Status(401).JSON(fiber.Map{"error": "session_expired"})
		}
		if src.renewals > 1 {
			t.Errorf("ForwardWith renewed the token %d times for one request, want at most once", src.renewals)
		}
		return err
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(2 * time.Second) })
	return "http://" + ln.Addr().String()
}

var errTestRefreshFailed = errors.New("test: the refresh failed")

// testTokens is the TokenSource of startGateway: bearer, renewed to
// renewed ("" none; "refresh-fails" an error).
type testTokens struct {
	bearer, renewed string
	renewals        int
}

func (s *testTokens) Token(context.Context) (string, error) { return s.bearer, nil }

func (s *testTokens) Renew(_ context.Context, refused string) (string, error) {
	s.renewals++
	if refused != s.bearer {
		return "", fmt.Errorf("test: Renew got refused token %q, want %q", refused, s.bearer)
	}
	if s.renewed == "refresh-fails" {
		return "", errTestRefreshFailed
	}
	return s.renewed, nil
}

func newProxy(t testing.TB, cfg Config) *Proxy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// recorder is an upstream that records what it received.
type recorder struct {
	mu     sync.Mutex
	header http.Header
	path   string // the request target as received
	body   []string
}

func (rc *recorder) record(r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.header = r.Header.Clone()
	rc.header.Set("Host", r.Host)
	rc.path = r.RequestURI // exactly as received
	rc.body = append(rc.body, string(b))
}

func (rc *recorder) seen() (http.Header, string, []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.header, rc.path, rc.body
}

func TestHeaderHygiene(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.record(r)
		w.Header().Add("Set-Cookie", "__Host-bff=stolen; Path=/; Secure")
		w.Header().Add("Set-Cookie", "__Host-bff.2=stolen; Path=/; Secure")
		w.Header().Add("Set-Cookie", "app=1; Path=/")
		w.Header().Set("Connection", "X-Resp-Hop")
		w.Header().Set("X-Resp-Hop", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-App", "kept")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	defer up.Close()

	p := newProxy(t, Config{
		Routes: []Route{{
			Prefix: "/api/", Upstream: up.URL + "/v1", StripPrefix: true,
			AddHeaders:  map[string]string{"X-Api-Key": "configured"},
			DropHeaders: []string{"X-Drop-Me"},
			DropCookies: []string{"tracking"},
		}},
		GatewayCookies: []string{"__Host-bff"},
	})
	gw := startGateway(t, p, false, "access-123", "")

	req, _ := http.NewRequest("POST", gw+"/api/orders/a%20b;v=1?x=1&y=%20", strings.NewReader("payload"))
	req.Header.Set("Authorization", "Basic dXNlcjpwYXNz")
	// Two Cookie headers (an HTTP/1.1 client may send them apart): both
	// are filtered and reach the upstream as one.
	req.Header.Add("Cookie", "__Host-bff=sealed; __Host-bff.1=chunk; other=1; tracking=2")
	req.Header.Add("Cookie", "__Host-bff.2=chunk2; theme=dark")
	req.Header.Set("Connection", "X-Hop")
	req.Header.Set("X-Hop", "1")
	// A second Connection line names a field too.
	req.Header.Add("Connection", "A-Hop2") // sent before the Connection lines (Go sorts names)
	req.Header.Set("A-Hop2", "2")
	// An underscore name that CGI-style upstreams read as X-Forwarded-For.
	req.Header["X_Forwarded_For"] = []string{"6.6.6.6"}
	req.Header.Set("Keep-Alive", "timeout=5")
	req.Header.Set("Proxy-Authorization", "Basic eA==")
	req.Header.Set("Te", "trailers")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("X-Forwarded-Host", "evil.example")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Real-Ip", "6.6.6.6")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	req.Header.Set("X-Drop-Me", "1")
	req.Header.Set("X-Api-Key", "from-browser")
	req.Header.Set("X-Custom", "passes")
	res, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()

	h, path, bodies := rc.seen()
	gwHost := strings.TrimPrefix(gw, "http://")
	upHost := strings.TrimPrefix(up.URL, "http://")
	checks := []struct{ name, got, want string }{
		{"path", path, "/v1/orders/a%20b;v=1?x=1&y=%20"},
		{"body", strings.Join(bodies, "|"), "payload"},
		{"Host", h.Get("Host"), upHost},
		{"Authorization", strings.Join(h.Values("Authorization"), ","), "Bearer access-123"},
		{"Cookie", strings.Join(h.Values("Cookie"), "|"), "other=1; theme=dark"},
		{"X-Hop", h.Get("X-Hop"), ""},
		{"A-Hop2 (named by a second Connection line, after it)", h.Get("A-Hop2"), ""},
		{"underscore names", underscoreNames(h), ""},
		{"Keep-Alive", h.Get("Keep-Alive"), ""},
		{"Proxy-Authorization", h.Get("Proxy-Authorization"), ""},
		{"Te", h.Get("Te"), ""},
		{"X-Forwarded-For", strings.Join(h.Values("X-Forwarded-For"), ","), "127.0.0.1"},
		{"X-Forwarded-Host", strings.Join(h.Values("X-Forwarded-Host"), ","), gwHost},
		{"X-Forwarded-Proto", strings.Join(h.Values("X-Forwarded-Proto"), ","), "http"},
		{"X-Real-Ip", h.Get("X-Real-Ip"), ""},
		{"Forwarded", h.Get("Forwarded"), ""},
		{"X-Drop-Me", h.Get("X-Drop-Me"), ""},
		{"X-Api-Key", strings.Join(h.Values("X-Api-Key"), ","), "configured"},
		{"X-Custom", h.Get("X-Custom"), "passes"},

		{"response status", fmt.Sprint(res.StatusCode), "200"},
		{"response body", string(body), `{"ok":true}`},
		{"response Set-Cookie", strings.Join(res.Header.Values("Set-Cookie"), "|"), "app=1; Path=/"},
		{"response X-Resp-Hop", res.Header.Get("X-Resp-Hop"), ""},
		{"response Keep-Alive", res.Header.Get("Keep-Alive"), ""},
		{"response Proxy-Authenticate", res.Header.Get("Proxy-Authenticate"), ""},
		{"response X-App", res.Header.Get("X-App"), "kept"},
		{"response Content-Type", res.Header.Get("Content-Type"), "application/json"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
}

func underscoreNames(h http.Header) string {
	var names []string
	for k := range h {
		if strings.Contains(k, "_") {
			names = append(names, k)
		}
	}
	return strings.Join(names, ",")
}

func TestPathsStayInRoute(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rc.record(r) }))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{
		{Prefix: "/api", Upstream: up.URL},
		{Prefix: "/api/admin/", Upstream: up.URL + "/internal", StripPrefix: true},
	}})

	for _, tc := range []struct {
		path   string
		prefix string // "" for no match
	}{
		{"/api", "/api"},
		{"/api/", "/api"},
		{"/api/x", "/api"},
		{"/apix", ""},
		{"/api/admin", "/api/admin/"},
		{"/api/admin/users", "/api/admin/"},
		// Dot segments are refused, not resolved: a browser never sends
		// them.
		{"/api/x/../admin/users", ""},
		{"/api/../etc/passwd", ""},
		{"/api/%2e%2e/etc", ""},
		{"/api/..%2F..%2Fetc", ""},
		{"/api/..;/admin/users", ""},
		{"/api/a\\b", ""},
		{"//api/x", "/api"},
		// Matched as the upstream will route it: decoded, without path
		// parameters.
		{"/api/%61dmin/users", "/api/admin/"},
		{"/api/admin;x=1/users", "/api/admin/"},
		{"/api/%2561dmin/users", "/api/admin/"},
	} {
		r, ok := p.Match(tc.path)
		got := ""
		if ok {
			got = r.Prefix
		}
		if got != tc.prefix {
			t.Errorf("Match(%q) = %q, want %q", tc.path, got, tc.prefix)
		}
	}

	gw := startGateway(t, p, false, "", "")
	for _, tc := range []struct{ path, upstream string }{
		{"/api/admin/users?q=1", "/internal/users?q=1"},
		{"/api/admin", "/internal/"},
		{"/api/x/y//z", "/api/x/y/z"},
		// StripPrefix removes the prefix's segments in whatever form
		// they came.
		{"/api/%61dmin;p/users", "/internal/users"},
	} {
		res, err := testhttp.Client.Get(gw + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if _, got, _ := rc.seen(); got != tc.upstream {
			t.Errorf("%s reached upstream as %q, want %q", tc.path, got, tc.upstream)
		}
	}
}

func TestTrustedProxies(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { rc.record(r) }))
	defer up.Close()

	for _, tc := range []struct {
		name              string
		trusted           []string
		xff, xfh, xfp, fw string
	}{
		{"trusted", []string{"10.0.0.0/8", "127.0.0.1"}, "6.6.6.6, 127.0.0.1", "app.example", "https", "for=6.6.6.6, for=127.0.0.1"},
		{"untrusted", []string{"10.0.0.0/8"}, "127.0.0.1", "", "http", ""},
	} {
		p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}, TrustedProxies: tc.trusted})
		gw := startGateway(t, p, false, "", "")
		req, _ := http.NewRequest("GET", gw+"/api/x", nil)
		req.Header.Set("X-Forwarded-For", "6.6.6.6")
		req.Header.Set("X-Forwarded-Host", "app.example")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Forwarded", "for=6.6.6.6")
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		h, _, _ := rc.seen()
		xfh := tc.xfh
		if xfh == "" {
			xfh = strings.TrimPrefix(gw, "http://")
		}
		if got := strings.Join(h.Values("X-Forwarded-For"), ","); got != tc.xff {
			t.Errorf("%s: X-Forwarded-For = %q, want %q", tc.name, got, tc.xff)
		}
		if got := strings.Join(h.Values("X-Forwarded-Host"), ","); got != xfh {
			t.Errorf("%s: X-Forwarded-Host = %q, want %q", tc.name, got, xfh)
		}
		if got := strings.Join(h.Values("X-Forwarded-Proto"), ","); got != tc.xfp {
			t.Errorf("%s: X-Forwarded-Proto = %q, want %q", tc.name, got, tc.xfp)
		}
		if got := h.Get("Forwarded"); got != tc.fw {
			t.Errorf("%s: Forwarded = %q, want %q", tc.name, got, tc.fw)
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()

	// An upstream that never answers until the test ends.
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)

	reg := prometheus.NewRegistry()
	p := newProxy(t, Config{
		Routes: []Route{
			{Prefix: "/down", Upstream: down},
			{Prefix: "/slow", Upstream: slow.URL, Timeout: 300 * time.Millisecond},
		},
		Registerer: reg,
	})
	gw := startGateway(t, p, false, "tok", "")
	for _, tc := range []struct {
		path   string
		status int
		code   string
		kind   string
	}{
		{"/down/x", 502, "upstream_unavailable", "connect"},
		{"/slow/x", 504, "upstream_timeout", "timeout"},
	} {
		res, err := testhttp.Client.Get(gw + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(body), `"error":"`+tc.code+`"`) {
			t.Errorf("%s: %d %s, want %d %s", tc.path, res.StatusCode, body, tc.status, tc.code)
		}
		if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Errorf("%s: Content-Type %q", tc.path, ct)
		}
		if strings.Contains(string(body), "tok") {
			t.Errorf("%s: error body leaks the token: %s", tc.path, body)
		}
		route := strings.SplitN(tc.path[1:], "/", 2)[0]
		if n := counterValue(t, p.metrics.errors.WithLabelValues("/"+route, tc.kind)); n != 1 {
			t.Errorf("%s: upstream errors{kind=%s} = %v, want 1", tc.path, tc.kind, n)
		}
	}
}

func TestLargeResponseStreams(t *testing.T) {
	const size = 100 << 20
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("chunked") == "" {
			w.Header().Set("Content-Length", fmt.Sprint(size))
		}
		buf := make([]byte, 32<<10)
		for n := 0; n < size; n += len(buf) {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}})
	gw := startGateway(t, p, false, "tok", "")

	for _, q := range []string{"", "?chunked=1"} {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		res, err := testhttp.Client.Get(gw + "/api/big" + q)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || n != size {
			t.Fatalf("%q: read %d bytes (%v), want %d", q, n, err, size)
		}
		runtime.ReadMemStats(&after)
		// Upstream, gateway and client all run in this process: the total
		// allocated while 100 MB passed must stay far below 100 MB.
		if d := after.TotalAlloc - before.TotalAlloc; d > 24<<20 {
			t.Errorf("%q: %d MB allocated while streaming 100 MB: the body was buffered", q, d>>20)
		}
	}
}

func TestStreamedRequestBody(t *testing.T) {
	const size = 20 << 20
	var got int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.Copy(io.Discard, r.Body)
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL, MaxBodyBytes: size}}, MaxRequestBodySize: 1 << 10})
	gw := startGateway(t, p, true, "tok", "")

	for _, chunked := range []bool{false, true} {
		got = 0
		var body io.Reader = io.LimitReader(zeros{}, size)
		if !chunked {
			body = bytes.NewReader(make([]byte, size))
		}
		req, _ := http.NewRequest("PUT", gw+"/api/upload", body)
		if chunked {
			req.ContentLength = -1
		}
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 200 || got != size {
			t.Errorf("chunked=%v: status %d, upstream read %d bytes, want %d", chunked, res.StatusCode, got, size)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestServerSentEvents(t *testing.T) {
	t.Parallel()
	next, stop := make(chan struct{}), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		for i := 1; i <= 3; i++ {
			fmt.Fprintf(w, "id: %d\ndata: event %d\n\n", i, i)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-stop:
				return
			}
		}
	}))
	defer up.Close()
	defer close(stop)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/events", Upstream: up.URL, Timeout: time.Second}}})
	gw := startGateway(t, p, false, "tok", "")

	// The upstream sends event i+1 only after the client has received
	// event i: a gateway that buffered the stream would deadlock here and
	// the request's context would end the test.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", gw+"/events/stream", nil)
	res, err := testhttp.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type = %q", ct)
	}
	br := bufio.NewReader(res.Body)
	for i := 1; i <= 3; i++ {
		var ev []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("event %d: %v (received %q)", i, err, ev)
			}
			if line == "\n" {
				break
			}
			ev = append(ev, strings.TrimSpace(line))
		}
		if want := fmt.Sprintf("data: event %d", i); len(ev) != 2 || ev[1] != want {
			t.Fatalf("event %d = %q, want %q", i, ev, want)
		}
		if i < 3 {
			next <- struct{}{}
		}
	}
	// The route's 1s timeout bounds the headers only; the stream outlived it.
}

func TestWebSocketEcho(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.record(r)
		// Behind the gateway the upstream sees its own Host; the browser's
		// is in X-Forwarded-Host, which is what it checks Origin against.
		u := websocket.Upgrader{Subprotocols: []string{"echo.v1"}, CheckOrigin: func(r *http.Request) bool {
			return r.Header.Get("Origin") == "http://"+r.Header.Get("X-Forwarded-Host")
		}}
		conn, err := u.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/ws", Upstream: up.URL}}, GatewayCookies: []string{"__Host-bff"}})
	gw := startGateway(t, p, false, "ws-token", "")

	hdr := http.Header{}
	hdr.Set("Origin", gw)
	hdr.Set("Cookie", "__Host-bff=sealed; theme=dark")
	d := websocket.Dialer{Subprotocols: []string{"echo.v1"}, HandshakeTimeout: 10 * time.Second}
	conn, res, err := d.Dial("ws"+strings.TrimPrefix(gw, "http")+"/ws/socket", hdr)
	if err != nil {
		t.Fatalf("dial through gateway: %v (%v)", err, res)
	}
	defer conn.Close()
	if conn.Subprotocol() != "echo.v1" {
		t.Errorf("subprotocol %q, want echo.v1", conn.Subprotocol())
	}
	for _, m := range []string{"hello", strings.Repeat("x", 100<<10)} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(m)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != "echo: "+m {
			t.Errorf("echo of %d bytes came back as %d bytes", len(m), len(got))
		}
	}
	h, _, _ := rc.seen()
	if got := h.Get("Authorization"); got != "Bearer ws-token" {
		t.Errorf("upstream handshake Authorization = %q", got)
	}
	if got := h.Get("Cookie"); got != "theme=dark" {
		t.Errorf("upstream handshake Cookie = %q", got)
	}

	// A cross-site handshake is refused by the same-host Origin rule.
	hdr.Set("Origin", "https://evil.example")
	if _, res, err := d.Dial("ws"+strings.TrimPrefix(gw, "http")+"/ws/socket", hdr); err == nil || res == nil || res.StatusCode != http.StatusForbidden {
		t.Errorf("cross-origin handshake: err %v, response %v; want 403", err, res)
	}
}

func TestInvalidTokenRetry(t *testing.T) {
	t.Parallel()
	rc := &recorder{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc.record(r)
		if r.Header.Get("Authorization") != "Bearer fresh" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="api", error="invalid_token", error_description="expired"`)
			w.Header().Set("X-First-Attempt", "1")
			w.WriteHeader(401)
			_, _ = io.WriteString(w, `{"error":"invalid_token"}`)
			return
		}
		w.Header().Set("X-Final", "1")
		_, _ = io.WriteString(w, "ok")
	}))
	defer up.Close()
	cfg := Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL}}, MaxRequestBodySize: 64}

	t.Run("replayed", func(t *testing.T) {
		gw := startGateway(t, newProxy(t, cfg), false, "stale", "fresh")
		rc.body = nil
		res, err := testhttp.Client.Post(gw+"/api/orders", "text/plain", strings.NewReader("order-1"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		_, _, bodies := rc.seen()
		if res.StatusCode != 200 || string(body) != "ok" || res.Header.Get("X-Final") != "1" {
			t.Errorf("after retry: %d %q", res.StatusCode, body)
		}
		if res.Header.Get("X-First-Attempt") != "" || res.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("headers of the first 401 leaked into the retried answer: %v", res.Header)
		}
		if strings.Join(bodies, "|") != "order-1|order-1" {
			t.Errorf("upstream bodies %q, want the body twice", bodies)
		}
	})
	t.Run("refresh fails", func(t *testing.T) {
		gw := startGateway(t, newProxy(t, cfg), false, "stale", "refresh-fails")
		res, err := testhttp.Client.Get(gw + "/api/orders")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 401 || string(body) != `{"error":"session_expired"}` {
			t.Errorf("got %d %s, want the caller's session_expired", res.StatusCode, body)
		}
		if res.Header.Get("X-First-Attempt") != "" || res.Header.Get("WWW-Authenticate") != "" {
			t.Errorf("upstream 401 headers reached the caller's own answer: %v", res.Header)
		}
	})
	t.Run("passes through without retry", func(t *testing.T) {
		gw := startGateway(t, newProxy(t, cfg), false, "stale", "")
		res, err := testhttp.Client.Get(gw + "/api/orders")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 || !strings.Contains(res.Header.Get("WWW-Authenticate"), "invalid_token") {
			t.Errorf("got %d %v, want the upstream's 401", res.StatusCode, res.Header)
		}
	})
	t.Run("streamed body is not replayable", func(t *testing.T) {
		// The handler's retryBearer would turn the 401 into a 200 if
		// Forward signalled; with a streamed body it must not.
		gw := startGateway(t, newProxy(t, cfg), true, "stale", "fresh")
		req, _ := http.NewRequest("POST", gw+"/api/orders", io.LimitReader(zeros{}, 1<<20))
		req.ContentLength = -1
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 {
			t.Errorf("status %d, want the upstream's 401 passed through", res.StatusCode)
		}
	})
}

func TestInvalidTokenChallenge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		values []string
		want   bool
	}{
		{[]string{`Bearer error="invalid_token"`}, true},
		{[]string{`bearer realm="x", error=invalid_token, error_description="expired"`}, true},
		{[]string{`Basic realm="x"`, `Bearer error="invalid_token"`}, true},
		{[]string{`Bearer error="insufficient_scope"`}, false},
		{[]string{`Bearer realm="invalid_token"`}, false},
		{[]string{`Basic error="invalid_token"`}, false},
		{nil, false},
	} {
		var vs [][]byte
		for _, v := range tc.values {
			vs = append(vs, []byte(v))
		}
		if got := invalidTokenChallenge(vs); got != tc.want {
			t.Errorf("invalidTokenChallenge(%q) = %v, want %v", tc.values, got, tc.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	ok := Route{Prefix: "/api", Upstream: "http://127.0.0.1:1"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no routes", Config{}, "routes"},
		{"relative prefix", Config{Routes: []Route{{Prefix: "api", Upstream: ok.Upstream}}}, "routes[0].prefix"},
		{"dot prefix", Config{Routes: []Route{{Prefix: "/api/../x", Upstream: ok.Upstream}}}, "routes[0].prefix"},
		{"duplicate", Config{Routes: []Route{ok, {Prefix: "/api/", Upstream: ok.Upstream}}}, "duplicates"},
		{"scheme", Config{Routes: []Route{{Prefix: "/api", Upstream: "ftp://x"}}}, "routes[0].upstream"},
		{"query", Config{Routes: []Route{{Prefix: "/api", Upstream: "http://x/?a=1"}}}, "routes[0].upstream"},
		{"managed header", Config{Routes: []Route{{Prefix: "/api", Upstream: ok.Upstream, AddHeaders: map[string]string{"Authorization": "x"}}}}, "addHeaders"},
		{"header injection", Config{Routes: []Route{{Prefix: "/api", Upstream: ok.Upstream, AddHeaders: map[string]string{"X-A": "a\r\nX-B: b"}}}}, "addHeaders"},
		{"trusted", Config{Routes: []Route{ok}, TrustedProxies: []string{"nope"}}, "trustedProxies[0]"},
		{"negative timeout", Config{Routes: []Route{{Prefix: "/api", Upstream: ok.Upstream, Timeout: -1}}}, "timeout"},
	} {
		_, err := New(tc.cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrInvalidConfig naming %q", tc.name, err, tc.want)
		}
	}
	// Forward refuses a route it did not hand out.
	p := newProxy(t, Config{Routes: []Route{ok}})
	if err := p.Forward(nil, &Route{Prefix: "/api"}, ""); !errors.Is(err, ErrUnknownRoute) {
		t.Errorf("Forward(foreign route) = %v", err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestHeadAndEmptyResponses(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/file":
			w.Header().Set("Content-Length", "123456")
			w.Header().Set("ETag", `"v1"`)
			if r.Method != http.MethodHead {
				_, _ = w.Write(make([]byte, 123456))
			}
		case "/none":
			w.WriteHeader(http.StatusNoContent)
		case "/notmod":
			w.Header().Set("ETag", `"v1"`)
			w.WriteHeader(http.StatusNotModified)
		}
	}))
	defer up.Close()
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/", Upstream: up.URL}}})
	gw := startGateway(t, p, false, "", "")
	for _, tc := range []struct {
		method, path string
		status       int
		length       int64
		etag         string
	}{
		{"HEAD", "/file", 200, 123456, `"v1"`},
		{"GET", "/file", 200, 123456, `"v1"`},
		{"GET", "/none", 204, 0, ""},
		{"GET", "/notmod", 304, 0, `"v1"`},
	} {
		req, _ := http.NewRequest(tc.method, gw+tc.path, nil)
		res, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, res.Body)
		res.Body.Close()
		wantBody := tc.length
		if tc.method == "HEAD" {
			wantBody = 0
			if res.ContentLength != tc.length {
				t.Errorf("HEAD %s: Content-Length %d, want %d", tc.path, res.ContentLength, tc.length)
			}
		}
		if res.StatusCode != tc.status || n != wantBody || res.Header.Get("ETag") != tc.etag {
			t.Errorf("%s %s: %d, %d bytes, ETag %q; want %d, %d, %q", tc.method, tc.path, res.StatusCode, n, res.Header.Get("ETag"), tc.status, wantBody, tc.etag)
		}
	}
}

// TestTimeoutOnKeptAliveConnection: after quick answers on one kept-alive
// upstream connection (whose deadlines the upstream.Conn coalesces), a
// request the upstream never answers still ends in 504 within the route's
// timeout, not later.
func TestTimeoutOnKeptAliveConnection(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	var conns atomic.Int64
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	defer up.Close()
	defer close(release)
	const timeout = 400 * time.Millisecond
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: up.URL, Timeout: timeout}}})
	gw := startGateway(t, p, false, "tok", "")
	for i := 0; i < 20; i++ {
		res, err := testhttp.Client.Get(gw + "/api/fast")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("fast request %d: %d", i, res.StatusCode)
		}
	}
	start := time.Now()
	res, err := testhttp.Client.Get(gw + "/api/slow")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	took := time.Since(start)
	if res.StatusCode != 504 {
		t.Errorf("slow request: %d, want 504", res.StatusCode)
	}
	if took > 10*timeout {
		t.Errorf("slow request answered after %v, the route's timeout is %v", took, timeout)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the upstream saw %d connections, want the one kept alive", n)
	}
}
