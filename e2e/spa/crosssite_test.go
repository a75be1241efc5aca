package spa

import (
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// attackTitle is the item title the cross-site page tries to create.
const attackTitle = "created-from-another-site"

// crossSitePage is what another site (an attacker's page the logged-in user
// opens) does: call the gateway's API with the user's cookies, with and
// without the anti-CSRF header, and post a mutation no-cors as a CSRF
// attack would. Each attempt's outcome lands in window.__results.
var crossSitePage = template.Must(template.New("x").Parse(`<!DOCTYPE html>
<html><head><title>another site</title></head><body>
<h1>Another site</h1>
<pre id="result"></pre>
<script>
const gw = {{.Gateway}};
async function attempt(name, path, init) {
  try {
    const r = await fetch(gw + path, Object.assign({ credentials: 'include', cache: 'no-store' }, init));
    let body = '';
    try { body = await r.text(); } catch (e) { body = 'unreadable: ' + e; }
    return { name, ok: r.ok, status: r.status, type: r.type, body };
  } catch (e) {
    return { name, error: String(e) };
  }
}
(async () => {
  const results = [];
  results.push(await attempt('get-no-header', '/api/items', {}));
  results.push(await attempt('get-with-header', '/api/items', { headers: { 'X-CSRF': '1' } }));
  results.push(await attempt('user-with-header', '/bff/user', { headers: { 'X-CSRF': '1' } }));
  results.push(await attempt('post-no-cors', '/api/items', {
    method: 'POST', mode: 'no-cors',
    headers: { 'Content-Type': 'text/plain' },
    body: JSON.stringify({ title: {{.Title}} }),
  }));
  results.push(await attempt('post-with-header', '/api/items', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-CSRF': '1' },
    body: JSON.stringify({ title: {{.Title}} }),
  }));
  window.__results = results;
  document.getElementById('result').textContent = JSON.stringify(results, null, 2);
  document.body.dataset.done = '1';
})();
</script>
</body></html>`))

// attemptResult is one cross-site fetch as the page saw it.
type attemptResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Status int    `json:"status"`
	Type   string `json:"type"`
	Body   string `json:"body"`
	Error  string `json:"error"`
}

// crossSiteServer serves crossSitePage on a loopback port and returns its
// URL under the host name "localhost": a different site from the gateway
// at 127.0.0.1 (sites compare host names, not addresses), yet still a
// secure context on plain http.
func crossSiteServer(t *testing.T, gatewayURL string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if err := crossSitePage.Execute(w, map[string]string{"Gateway": gatewayURL, "Title": attackTitle}); err != nil {
			t.Errorf("cross-site page: %v", err)
		}
	}))
	t.Cleanup(srv.Close)
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("http://localhost:%s/", port)
}
