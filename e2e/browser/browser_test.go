package browser

import (
	"bytes"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const marker = "TOKEN-LIKE-MARKER-7f3a9"

const page = `<!DOCTYPE html>
<html><head><title>harness</title></head><body>
<h1 id="title">Harness page</h1>
<form id="f" method="post" action="/submit">
  <input id="name" name="name">
  <button id="send" type="submit">Send</button>
</form>
<button id="go" type="button">Go</button>
<div id="out"></div>
<script>
document.getElementById('go').addEventListener('click', async () => {
  const r = await fetch('/api/data');
  const j = await r.json();
  document.getElementById('out').textContent = 'got ' + j.n;
  localStorage.setItem('ls-key', 'ls-value');
  sessionStorage.setItem('ss-key', 'ss-value');
  document.cookie = 'visible=yes; path=/';
  await new Promise((resolve, reject) => {
    const req = indexedDB.open('harness-db', 3);
    req.onupgradeneeded = () => req.result.createObjectStore('things');
    req.onsuccess = () => {
      const tx = req.result.transaction('things', 'readwrite');
      tx.objectStore('things').put({ secret: 'idb-value' }, 'k1');
      tx.oncomplete = () => { req.result.close(); resolve(); };
      tx.onerror = () => reject(tx.error);
    };
    req.onerror = () => reject(req.error);
  });
  document.getElementById('out').dataset.done = '1';
});
</script>
</body></html>`

func harness(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "__Host-hidden", Value: "httponly-value", Path: "/", HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("GET /api/data", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Header-Marker", "hdr-"+marker)
		fmt.Fprintf(w, `{"n": 42, "echo": %q}`, "body-"+marker)
	})
	mux.HandleFunc("POST /submit", func(w http.ResponseWriter, r *http.Request) {
		// Post/redirect/get, the redirect carrying a marker in its URL.
		http.Redirect(w, r, "/result?name="+r.PostFormValue("name")+"&m=loc-"+marker, http.StatusSeeOther)
	})
	mux.HandleFunc("GET /result", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!DOCTYPE html><p id="result">Hello, %s</p>`, html.EscapeString(r.URL.Query().Get("name")))
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestBrowserHarness(t *testing.T) {
	srv := harness(t)
	b := New(t)
	b.OutDir = t.TempDir()

	b.Navigate(srv.URL + "/")
	b.WaitVisible("#title")
	if got := b.Text("#title"); got != "Harness page" {
		t.Errorf("title text = %q", got)
	}

	b.Click("#go")
	b.WaitFor(`document.getElementById('out').dataset.done === '1'`)
	if got := b.Text("#out"); got != "got 42" {
		t.Errorf("out = %q", got)
	}
	var sum int
	b.Eval(`Promise.resolve(20 + 22)`, &sum)
	if sum != 42 {
		t.Errorf("eval = %d", sum)
	}

	st := b.Storage()
	if st.LocalStorage["ls-key"] != "ls-value" || st.SessionStorage["ss-key"] != "ss-value" {
		t.Errorf("web storage = %+v / %+v", st.LocalStorage, st.SessionStorage)
	}
	if !strings.Contains(st.Cookie, "visible=yes") || strings.Contains(st.Cookie, "httponly-value") {
		t.Errorf("document.cookie = %q, want the script cookie and not the HttpOnly one", st.Cookie)
	}
	if len(st.IndexedDB) != 1 || st.IndexedDB[0].Name != "harness-db" || st.IndexedDB[0].Version != 3 ||
		len(st.IndexedDB[0].Stores) != 1 || len(st.IndexedDB[0].Stores[0].Records) != 1 ||
		st.IndexedDB[0].Stores[0].Records[0].Value != `{"secret":"idb-value"}` {
		t.Errorf("indexedDB = %+v", st.IndexedDB)
	}
	if !st.Contains("idb-value") || st.Contains(marker) || len(st.Errors) != 0 {
		t.Errorf("storage Contains/Errors wrong: %+v", st)
	}
	var hidden bool
	for _, c := range b.Cookies() {
		if c.Name == "__Host-hidden" && c.HTTPOnly && c.Value == "httponly-value" {
			hidden = true
		}
	}
	if !hidden {
		t.Error("Cookies() lacks the HttpOnly __Host- cookie")
	}

	// A form post that redirects: wait for the next page before acting.
	b.SetValue("#name", "Ada")
	b.Click("#send")
	b.WaitURL(srv.URL + "/result")
	b.WaitVisible("#result")
	if got := b.Text("#result"); got != "Hello, Ada" {
		t.Errorf("result = %q", got)
	}

	var body, header, redirect, rawCookie bool
	for _, r := range b.Responses() {
		if r.Source == "response" && strings.HasSuffix(r.URL, "/api/data") {
			body = bytes.Contains(r.Body, []byte("body-"+marker))
			header = r.Headers["X-Header-Marker"] == "hdr-"+marker
		}
		if r.Source == "redirect" && r.Status == http.StatusSeeOther && strings.Contains(r.Headers["Location"], "loc-"+marker) {
			redirect = r.Contains("loc-" + marker)
		}
		if r.Source == "raw" && strings.Contains(r.Headers["Set-Cookie"], "httponly-value") {
			rawCookie = true
		}
		if r.Source == "response" && strings.HasSuffix(r.URL, "/") && r.BodyError != "" {
			t.Errorf("page body not captured: %s", r.BodyError)
		}
	}
	if !body || !header || !redirect || !rawCookie {
		t.Errorf("response capture: body=%v header=%v redirect=%v raw Set-Cookie=%v", body, header, redirect, rawCookie)
	}
	b.ResetResponses()
	if n := len(b.Responses()); n != 0 {
		t.Errorf("after ResetResponses: %d responses", n)
	}

	p := b.SaveScreenshot("result page")
	png, err := os.ReadFile(p)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s: %v (%d bytes)", p, err, len(png))
	}
	if filepath.Base(p) != "TestBrowserHarness-result_page.png" {
		t.Errorf("screenshot name = %s", filepath.Base(p))
	}

	// Kept shots are written only by the failure cleanup; check that path.
	b.Screenshot("kept")
	paths := b.writeShots()
	if len(paths) != 1 || filepath.Base(paths[0]) != "TestBrowserHarness-kept.png" {
		t.Errorf("kept screenshots written = %v", paths)
	}
}

func TestFailedRequestIsRecorded(t *testing.T) {
	srv := harness(t)
	b := New(t)
	b.Navigate(srv.URL + "/")
	// A cross-origin fetch without CORS headers: the page sees a failure
	// and the record says why.
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"secret":"cross"}`)
	}))
	t.Cleanup(other.Close)
	var outcome string
	b.Eval(fmt.Sprintf(`fetch(%q, {method: 'POST', headers: {'X-CSRF': '1'}}).then(() => 'ok', (e) => 'failed: ' + e.message)`, strings.Replace(other.URL, "127.0.0.1", "localhost", 1)+"/x"), &outcome)
	if !strings.HasPrefix(outcome, "failed") {
		t.Fatalf("cross-origin fetch outcome = %q", outcome)
	}
	var failed bool
	for _, r := range b.Responses() {
		if strings.HasSuffix(r.URL, "/x") && r.Failed != "" {
			failed = true
		}
	}
	if !failed {
		t.Errorf("no failed request recorded: %+v", b.Responses())
	}
}
