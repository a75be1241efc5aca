package ws

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// echoUpstream is the API behind the /ws/ route: on each handshake it asks
// the issuer's userinfo endpoint who the bearer token belongs to, refuses
// the upgrade without a valid one, and echoes "sub: message".
type echoUpstream struct {
	*httptest.Server

	mu         sync.Mutex
	userinfo   string   // the issuer's userinfo endpoint
	handshakes []string // the sub of each accepted handshake, or a refusal
}

func newEchoUpstream(t *testing.T) *echoUpstream {
	u := &echoUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sub, err := u.subject(r.Header.Get("Authorization"))
		u.mu.Lock()
		if err != nil {
			u.handshakes = append(u.handshakes, "refused: "+err.Error())
		} else {
			u.handshakes = append(u.handshakes, sub)
		}
		u.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		// The gateway checked the browser's Origin; the upstream sees its
		// own address as the host.
		up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			mt, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(mt, []byte(sub+": "+string(msg))); err != nil {
				return
			}
		}
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *echoUpstream) subject(auth string) (string, error) {
	if !strings.HasPrefix(auth, "Bearer ") {
		return "", fmt.Errorf("no bearer token")
	}
	u.mu.Lock()
	endpoint := u.userinfo
	u.mu.Unlock()
	req, _ := http.NewRequest(http.MethodGet, endpoint, nil)
	req.Header.Set("Authorization", auth)
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var info struct {
		Sub string `json:"sub"`
	}
	if res.StatusCode != 200 || json.NewDecoder(res.Body).Decode(&info) != nil || info.Sub == "" {
		return "", fmt.Errorf("userinfo answered %d", res.StatusCode)
	}
	return info.Sub, nil
}

func (u *echoUpstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.handshakes...)
}

// attemptPage tries a WebSocket to the gateway from wherever it is served
// and reports what the page saw in window.__ws.
var attemptPage = template.Must(template.New("x").Parse(`<!DOCTYPE html>
<html><head><title>another origin</title></head><body>
<script>
window.__ws = new Promise((resolve) => {
  const ws = new WebSocket({{.URL}});
  let opened = false;
  ws.onopen = () => { opened = true; ws.send('from ' + location.origin); };
  ws.onmessage = (ev) => { resolve({opened, message: ev.data}); ws.close(); };
  ws.onclose = (ev) => resolve({opened, code: ev.code});
});
</script>
</body></html>`))

type attempt struct {
	Opened  bool   `json:"opened"`
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// servePage serves attemptPage on a new loopback port and returns the
// page's URL with the given host name.
func servePage(t *testing.T, host, wsURL string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = attemptPage.Execute(w, map[string]string{"URL": wsURL})
	}))
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// TestWebSocketThroughAPIRoute: a logged-in page of the gateway's origin
// opens a WebSocket through a user route and talks to the upstream as the
// user (the upstream verified the session's token); pages of another
// origin, with the user's cookies or without, are refused by the gateway
// before the upstream is dialled.
func TestWebSocketThroughAPIRoute(t *testing.T) {
	echo := newEchoUpstream(t)
	st := stack.Start(t, stack.Options{Env: []string{
		"BFFGATE_GATEWAY_ROUTES=" + fmt.Sprintf(`[{"prefix": "/ws/", "upstream": %q, "policy": "user"}]`, echo.URL),
	}})
	ui := discoverUserinfo(t, st.IssuerURL)
	echo.mu.Lock()
	echo.userinfo = ui
	echo.mu.Unlock()
	b := browser.New(t)
	b.Timeout = 30 * time.Second
	wsURL := "ws" + strings.TrimPrefix(st.GatewayURL, "http") + "/ws/echo"

	// Log in through the demo SPA and the issuer's form.
	b.Navigate(st.GatewayURL + "/")
	b.WaitVisible("#login")
	b.Click("#login")
	b.WaitURL(st.IssuerURL + "/")
	b.WaitVisible("#username")
	b.SendKeys("#username", "demo")
	b.SendKeys("#password", "demo")
	b.Click(`button[type="submit"]`)
	b.WaitURL(st.GatewayURL + "/")
	b.WaitVisible("#logout")

	var got attempt
	b.Eval(fmt.Sprintf(`new Promise((resolve) => {
  const ws = new WebSocket(%q);
  ws.onopen = () => ws.send('hello');
  ws.onmessage = (ev) => { resolve({opened: true, message: ev.data}); ws.close(); };
  ws.onclose = (ev) => resolve({opened: false, code: ev.code});
})`, wsURL), &got)
	if got.Message != "demo-user-1: hello" {
		t.Fatalf("the SPA's WebSocket: %+v, want the echo of the upstream that verified the demo user's token (handshakes seen: %q)", got, echo.seen())
	}
	before := len(echo.seen())

	// The same site on another port (the session cookie rides along:
	// only the Origin check refuses it), and another site.
	_, gwPort, _ := net.SplitHostPort(strings.TrimPrefix(st.GatewayURL, "http://"))
	for _, page := range []struct{ name, url string }{
		{"same site, another origin", servePage(t, "127.0.0.1", wsURL)},
		{"another site", servePage(t, "localhost", wsURL)},
	} {
		if strings.Contains(page.url, ":"+gwPort+"/") {
			t.Fatalf("page served on the gateway's port")
		}
		b.Navigate(page.url)
		var a attempt
		b.Eval(`window.__ws`, &a)
		if a.Opened || a.Message != "" {
			t.Errorf("%s (%s): the WebSocket opened: %+v", page.name, page.url, a)
		}
	}
	if seen := echo.seen(); len(seen) != before {
		t.Errorf("the upstream saw handshakes from the other origins: %q", seen[before:])
	}
	if lines := st.LogLines("request refused by the anti-CSRF rules", `"reason":"origin"`, "/ws/echo"); len(lines) < 1 {
		t.Errorf("no log line of the gateway refusing the other origins' Origin; logs:\n%s", st.Logs())
	}
}

// discoverUserinfo reads the issuer's userinfo endpoint from discovery.
func discoverUserinfo(t *testing.T, issuer string) string {
	res, err := testhttp.Client.Get(issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var d struct {
		Userinfo string `json:"userinfo_endpoint"`
	}
	if err := json.NewDecoder(res.Body).Decode(&d); err != nil || d.Userinfo == "" {
		t.Fatalf("discovery: %v %+v", err, d)
	}
	return d.Userinfo
}
