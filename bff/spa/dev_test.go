package spa

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fasthttp/websocket"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// devServer is a stand-in for Vite on loopback: it serves pages, echoes
// WebSocket messages on /echo, and on / with the "vite-hmr" subprotocol
// behaves like Vite's HMR socket (a "connected" message, then pushed
// updates).
type devServer struct {
	srv   *httptest.Server
	seen  atomic.Value // http.Header of the last plain request
	conns atomic.Int64
}

func newDevServer(t *testing.T) *devServer {
	t.Helper()
	d := &devServer{}
	up := websocket.Upgrader{Subprotocols: []string{"vite-hmr"}, CheckOrigin: func(*http.Request) bool { return true }}
	d.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			if r.URL.Path == "/refuse" {
				http.Error(w, "no sockets here", http.StatusForbidden)
				return
			}
			conn, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			d.conns.Add(1)
			defer conn.Close()
			if conn.Subprotocol() == "vite-hmr" {
				_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"connected"}`))
				_ = conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"update","updates":[{"path":"/src/App.vue"}]}`))
			}
			for {
				mt, msg, err := conn.ReadMessage()
				if err != nil {
					return
				}
				if string(msg) == "close please" {
					_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(4001, "bye"))
					continue
				}
				if err := conn.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
					return
				}
			}
		}
		d.seen.Store(r.Header.Clone())
		switch r.URL.Path {
		case "/src/main.ts":
			w.Header().Set("Content-Type", "text/javascript")
			w.Header().Set("Connection", "X-Internal")
			w.Header().Set("X-Internal", "hop")
			_, _ = io.WriteString(w, "import './app.ts'?q="+r.URL.RawQuery)
		default:
			w.Header().Set("Content-Type", "text/html")
			_, _ = io.WriteString(w, "<!doctype html><script type=module src=/@vite/client></script>")
		}
	}))
	t.Cleanup(d.srv.Close)
	return d
}

func TestDevProxyHTTP(t *testing.T) {
	t.Parallel()
	dev := newDevServer(t)
	base := serve(t, newApp(t, Config{DevURL: dev.srv.URL, Logger: quiet()}))

	req, _ := http.NewRequest(http.MethodGet, base+"/src/main.ts?t=123", nil)
	req.Header.Set("Cookie", "__Host-bffgate=secret-session")
	req.Header.Set("Authorization", "Bearer nope")
	req.Header.Set("Accept", "*/*")
	for range 3 { // keep-alive: the same client connection serves each
		resp, err := testhttp.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "import './app.ts'?q=t=123" || resp.Header.Get("Content-Type") != "text/javascript" {
			t.Fatalf("status %d body %q type %q", resp.StatusCode, b, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("X-Internal") != "" {
			t.Error("a hop-by-hop header named in Connection reached the browser")
		}
	}
	seen := dev.seen.Load().(http.Header)
	if seen.Get("Cookie") != "" || seen.Get("Authorization") != "" {
		t.Errorf("the dev server received the browser's credentials: %v", seen)
	}
	if seen.Get("X-Forwarded-Host") == "" || seen.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-* missing: %v", seen)
	}
}

func TestDevProxyDown(t *testing.T) {
	t.Parallel()
	dev := httptest.NewServer(http.NotFoundHandler())
	url := dev.URL
	dev.Close()
	base := serve(t, newApp(t, Config{DevURL: url, Logger: quiet()}))
	resp, err := testhttp.Client.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(b), "npm run dev") {
		t.Fatalf("status %d body %q", resp.StatusCode, b)
	}
	// The WebSocket path says the same.
	_, wresp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/", nil)
	if err == nil || wresp == nil || wresp.StatusCode != http.StatusBadGateway {
		t.Fatalf("ws to a down dev server: err %v resp %v", err, wresp)
	}
}

func TestDevProxyWebSocketEcho(t *testing.T) {
	t.Parallel()
	dev := newDevServer(t)
	base := serve(t, newApp(t, Config{DevURL: dev.srv.URL, Logger: quiet()}))
	ws := "ws" + strings.TrimPrefix(base, "http")

	hdr := http.Header{"Origin": {base}}
	conn, resp, err := websocket.DefaultDialer.Dial(ws+"/echo", hdr)
	if err != nil {
		t.Fatalf("dial: %v (resp %v)", err, resp)
	}
	defer conn.Close()
	for _, msg := range []string{"hello", strings.Repeat("x", 1<<20)} {
		if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		mt, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if mt != websocket.TextMessage || string(got) != "echo: "+msg {
			t.Fatalf("got type %d, %d bytes", mt, len(got))
		}
	}
	if err := conn.WriteMessage(websocket.BinaryMessage, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	if mt, got, err := conn.ReadMessage(); err != nil || mt != websocket.BinaryMessage || string(got) != "echo: \x00\x01\x02" {
		t.Fatalf("binary: %d %q %v", mt, got, err)
	}
	// A close from the dev server reaches the browser with its code.
	if err := conn.WriteMessage(websocket.TextMessage, []byte("close please")); err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.ReadMessage()
	if !websocket.IsCloseError(err, 4001) {
		t.Fatalf("want close 4001, got %v", err)
	}
}

func TestDevProxyHMR(t *testing.T) {
	t.Parallel()
	dev := newDevServer(t)
	base := serve(t, newApp(t, Config{DevURL: dev.srv.URL, Logger: quiet()}))
	ws := "ws" + strings.TrimPrefix(base, "http")

	d := websocket.Dialer{Subprotocols: []string{"vite-hmr"}}
	conn, _, err := d.Dial(ws+"/?token=abc", http.Header{"Origin": {base}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Subprotocol() != "vite-hmr" {
		t.Fatalf("subprotocol %q, want vite-hmr", conn.Subprotocol())
	}
	for _, want := range []string{`{"type":"connected"}`, `{"type":"update"`} {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(msg), want) {
			t.Fatalf("got %s, want %s...", msg, want)
		}
	}

	t.Run("cross-origin refused", func(t *testing.T) {
		_, resp, err := d.Dial(ws+"/", http.Header{"Origin": {"http://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("err %v resp %v", err, resp)
		}
	})
	t.Run("dev server refusal passes through", func(t *testing.T) {
		_, resp, err := d.Dial(ws+"/refuse", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("err %v resp %v", err, resp)
		}
	})
}
