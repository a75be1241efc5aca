// Package browser drives Debian's chromium with chromedp for bffgate's
// end-to-end tests: one headless browser per test with a fresh profile, a
// few fail-fast helpers, a record of every network response the browser
// received (headers and bodies), a readout of everything script-visible
// storage holds, and screenshots saved under e2e/out when a test fails.
//
// The record and the readout let a test assert the BFF promise from the
// browser's side: no access, refresh or ID token in any response header,
// redirect, body, cookie visible to script, Web Storage or IndexedDB.
//
// # Caveats
//
// The browser is /usr/bin/chromium (or $BFFGATE_CHROMIUM). When it is
// missing the test skips with a message, unless BFFGATE_E2E_REQUIRE=1, when
// it fails. The flags are exactly those PEERS.md lists for this machine;
// --no-sandbox only when running as root, where chromium needs it.
//
// After a form post that navigates, wait for something on the next page
// (WaitVisible, WaitURL) before acting: acting at once races the navigation
// ("Inspected target navigated or closed").
package browser

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// RequireEnv is the environment variable that turns a missing browser from
// a skip into a failure.
const RequireEnv = "BFFGATE_E2E_REQUIRE"

// DefaultTimeout bounds each helper call.
const DefaultTimeout = 15 * time.Second

// Browser is one headless chromium with one tab.
type Browser struct {
	// Timeout bounds each helper call (default DefaultTimeout).
	Timeout time.Duration
	// OutDir receives screenshots (default e2e/out, or $BFFGATE_E2E_OUT).
	OutDir string

	t   testing.TB
	ctx context.Context // the tab's chromedp context
	log *syncBuffer

	mu      sync.Mutex // guards the fields below
	cond    *sync.Cond // signalled when pending drops
	pending int        // body fetches in flight
	records []*Response
	byID    map[network.RequestID]*Response
	reqs    map[network.RequestID]*network.Request
	shots   []shot
}

type shot struct {
	name string
	png  []byte
}

// Response is one response the browser received, or one set of raw headers.
type Response struct {
	// Source is "response" (Network.responseReceived; Body filled once
	// loading finished), "redirect" (a 3xx hop, headers only) or "raw"
	// (Network.responseReceivedExtraInfo: the headers as received on the
	// wire, Set-Cookie included).
	Source    string
	RequestID string
	Method    string
	URL       string
	Status    int
	MimeType  string
	Headers   map[string]string
	Body      []byte
	// BodyError says why Body is missing (for example a response without
	// a body, or one the browser evicted).
	BodyError string
	// Failed is the browser's error text when the request failed (CORS,
	// connection refused, blocked); Status is then 0 for a "response".
	Failed string
}

// Contains reports whether s occurs in the URL, a header name or value, or
// the body.
func (r Response) Contains(s string) bool {
	if strings.Contains(r.URL, s) || strings.Contains(string(r.Body), s) {
		return true
	}
	for k, v := range r.Headers {
		if strings.Contains(k, s) || strings.Contains(v, s) {
			return true
		}
	}
	return false
}

// chromiumPath finds the browser binary.
func chromiumPath() (string, error) {
	if p := os.Getenv("BFFGATE_CHROMIUM"); p != "" {
		return exec.LookPath(p)
	}
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found (looked for chromium, /usr/bin/chromium, chromium-browser; set BFFGATE_CHROMIUM to another path)")
}

// New starts chromium headless with a fresh profile in t.TempDir(), enables
// network capture, and closes the browser when the test ends (after saving
// screenshots if the test failed).
func New(t testing.TB) *Browser {
	t.Helper()
	path, err := chromiumPath()
	if err != nil {
		why := fmt.Sprintf("browser tests need Debian's chromium (apt-get install -y chromium): %v", err)
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%s (%s=1, so this is a failure, not a skip)", why, RequireEnv)
		}
		t.Skipf("%s; skipping (set %s=1 to make this a failure)", why, RequireEnv)
	}
	profile := filepath.Join(t.TempDir(), "chromium-profile")
	b := &Browser{
		Timeout: DefaultTimeout,
		OutDir:  defaultOutDir(),
		t:       t,
		log:     &syncBuffer{},
		byID:    make(map[network.RequestID]*Response),
		reqs:    make(map[network.RequestID]*network.Request),
	}
	b.cond = sync.NewCond(&b.mu)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile),
		chromedp.CombinedOutput(b.log),
	}
	if os.Getuid() == 0 {
		opts = append(opts, chromedp.Flag("no-sandbox", true))
	}
	// The browser outlives t.Context(), which ends before cleanups run:
	// the failure screenshot is taken in a cleanup.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithErrorf(func(format string, args ...any) {
		fmt.Fprintf(b.log, "chromedp: "+format+"\n", args...)
	}))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		// Chromium's helpers may still write into the profile for a moment;
		// remove it here, retrying, so t.TempDir's own removal finds it gone.
		removeAllRetry(profile)
	})
	// Listen starts the browser and opens the tab.
	if err := chromedp.Listen(ctx, b.onEvent); err != nil {
		t.Fatalf("start chromium %s: %v\n%s", path, err, b.log.String())
	}
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{
		MaxTotalBufferSize:    ptr(int64(256 << 20)),
		MaxResourceBufferSize: ptr(int64(32 << 20)),
	}); err != nil {
		t.Fatalf("enable network capture: %v", err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		if png, err := b.capture(); err == nil {
			b.mu.Lock()
			b.shots = append(b.shots, shot{name: "at-failure", png: png})
			b.mu.Unlock()
		}
		for _, p := range b.writeShots() {
			t.Logf("screenshot: %s", p)
		}
		t.Logf("chromium output:\n%s", b.log.String())
	})
	return b
}

func ptr[T any](v T) *T { return &v }

// Context returns the tab's chromedp context, for actions the helpers do not
// cover: chromedp.Run(b.Context(), ...). Derive a timeout from it.
func (b *Browser) Context() context.Context { return b.ctx }

// do runs the action with the helper timeout.
func do[T any](b *Browser, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// Navigate loads url and waits for its load event.
func (b *Browser) Navigate(url string) {
	b.t.Helper()
	if _, err := do(b, chromedp.Navigate(url)); err != nil {
		b.t.Fatalf("navigate to %s: %v", url, err)
	}
}

// WaitVisible waits until the element matching the CSS selector is visible.
func (b *Browser) WaitVisible(sel string) {
	b.t.Helper()
	if _, err := do(b, chromedp.WaitVisible(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("wait for %s to be visible: %v (at %s)", sel, err, b.location())
	}
}

// Click clicks the element matching the CSS selector (once visible).
func (b *Browser) Click(sel string) {
	b.t.Helper()
	if _, err := do(b, chromedp.Click(chromedp.CSS(sel))); err != nil {
		b.t.Fatalf("click %s: %v (at %s)", sel, err, b.location())
	}
}

// SetValue sets the value of the input matching the CSS selector.
func (b *Browser) SetValue(sel, value string) {
	b.t.Helper()
	if _, err := do(b, chromedp.SetValue(chromedp.CSS(sel), value)); err != nil {
		b.t.Fatalf("set value of %s: %v (at %s)", sel, err, b.location())
	}
}

// SendKeys types value into the element matching the CSS selector, as a
// user would (key events; scripts listening for input see them).
func (b *Browser) SendKeys(sel, value string) {
	b.t.Helper()
	if _, err := do(b, chromedp.SendKeys(chromedp.CSS(sel), value)); err != nil {
		b.t.Fatalf("type into %s: %v (at %s)", sel, err, b.location())
	}
}

// Text returns the visible text of the element matching the CSS selector.
func (b *Browser) Text(sel string) string {
	b.t.Helper()
	s, err := do(b, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v (at %s)", sel, err, b.location())
	}
	return s
}

// Eval evaluates the JavaScript expression in the page (awaiting a promise
// result) and decodes its JSON value into out (nil to ignore it).
func (b *Browser) Eval(expr string, out any) {
	b.t.Helper()
	if err := b.eval(expr, out); err != nil {
		b.t.Fatalf("eval %.200q: %v (at %s)", expr, err, b.location())
	}
}

func (b *Browser) eval(expr string, out any) error {
	raw, err := do(b, chromedp.Evaluate[[]byte](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		return err
	}
	if out == nil || len(raw) == 0 {
		return nil
	}
	return json.Unmarshal(raw, out)
}

// Location returns the tab's current URL.
func (b *Browser) Location() string {
	b.t.Helper()
	u, err := do(b, chromedp.Location())
	if err != nil {
		b.t.Fatalf("location: %v", err)
	}
	return u
}

func (b *Browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	u, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return "unknown location"
	}
	return u
}

// WaitURL polls until the tab's URL starts with prefix (navigation after a
// form post or a redirect chain), and returns it.
func (b *Browser) WaitURL(prefix string) string {
	b.t.Helper()
	deadline := time.Now().Add(b.Timeout)
	last := ""
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		u, err := chromedp.Run(ctx, chromedp.Location())
		cancel()
		if err == nil {
			last = u
			if strings.HasPrefix(u, prefix) {
				return u
			}
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("URL did not reach %s within %s (last %s)", prefix, b.Timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitFor polls until the JavaScript expression is truthy. It keeps
// polling through navigations (an evaluation that fails because the page
// is changing is retried), so it can follow a form post.
func (b *Browser) WaitFor(expr string) {
	b.t.Helper()
	deadline := time.Now().Add(b.Timeout)
	var last error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("wait for %q: not true within %s (last error: %v; at %s)", expr, b.Timeout, last, b.location())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Cookies returns every cookie the browser holds for the URLs (the current
// page's when none), HttpOnly ones included: what a test replays by hand.
func (b *Browser) Cookies(urls ...string) []*network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, b.Timeout)
	defer cancel()
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: urls})
	if err != nil {
		b.t.Fatalf("get cookies: %v", err)
	}
	return res.Cookies
}

// onEvent runs on chromedp's reader goroutine: it records and returns, and
// leaves body fetches to goroutines.
func (b *Browser) onEvent(ev any) {
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.mu.Lock()
		if e.RedirectResponse != nil {
			b.records = append(b.records, fromResponse("redirect", e.RequestID, b.reqs[e.RequestID], e.RedirectResponse))
		}
		b.reqs[e.RequestID] = e.Request
		b.mu.Unlock()
	case *network.EventResponseReceived:
		b.mu.Lock()
		r := fromResponse("response", e.RequestID, b.reqs[e.RequestID], e.Response)
		b.records = append(b.records, r)
		b.byID[e.RequestID] = r
		b.mu.Unlock()
	case *network.EventResponseReceivedExtraInfo:
		b.mu.Lock()
		r := &Response{Source: "raw", RequestID: string(e.RequestID), Status: int(e.StatusCode), Headers: headers(e.Headers)}
		if req := b.reqs[e.RequestID]; req != nil {
			r.Method, r.URL = req.Method, req.URL
		}
		b.records = append(b.records, r)
		b.mu.Unlock()
	case *network.EventLoadingFinished:
		b.mu.Lock()
		r := b.byID[e.RequestID]
		if r != nil {
			b.pending++
		}
		b.mu.Unlock()
		if r != nil {
			go b.fetchBody(e.RequestID, r)
		}
	case *network.EventLoadingFailed:
		b.mu.Lock()
		r := b.byID[e.RequestID]
		if r == nil {
			r = &Response{Source: "response", RequestID: string(e.RequestID)}
			if req := b.reqs[e.RequestID]; req != nil {
				r.Method, r.URL = req.Method, req.URL
			}
			b.records = append(b.records, r)
			b.byID[e.RequestID] = r
		}
		r.Failed = e.ErrorText
		if e.BlockedReason != "" {
			r.Failed += " (blocked: " + string(e.BlockedReason) + ")"
		}
		if e.CorsErrorStatus != nil {
			r.Failed += " (CORS: " + string(e.CorsErrorStatus.CorsError) + ")"
		}
		b.mu.Unlock()
	}
}

func (b *Browser) fetchBody(id network.RequestID, r *Response) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	res, err := chromedp.Call(ctx, network.GetResponseBody, network.GetResponseBodyParams{RequestID: id})
	cancel()
	b.mu.Lock()
	if err != nil {
		r.BodyError = err.Error()
	} else {
		r.Body = res.Body
	}
	b.pending--
	b.cond.Broadcast()
	b.mu.Unlock()
}

func fromResponse(source string, id network.RequestID, req *network.Request, resp *network.Response) *Response {
	r := &Response{
		Source:    source,
		RequestID: string(id),
		URL:       resp.URL,
		Status:    int(resp.Status),
		MimeType:  resp.MimeType,
		Headers:   headers(resp.Headers),
	}
	if req != nil {
		r.Method = req.Method
	}
	return r
}

func headers(h network.Headers) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = fmt.Sprint(v)
	}
	return out
}

// Responses returns a copy of every response recorded so far, after every
// body of a finished load was fetched. It first makes one round trip to the
// tab, so every event the browser sent before the call is included.
func (b *Browser) Responses() []Response {
	b.t.Helper()
	if _, err := do(b, chromedp.Evaluate[chromedp.Void]("0")); err != nil {
		b.t.Fatalf("sync with the tab: %v", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.pending > 0 {
		b.cond.Wait()
	}
	out := make([]Response, len(b.records))
	for i, r := range b.records {
		out[i] = *r
		out[i].Body = append([]byte(nil), r.Body...)
	}
	return out
}

// ResetResponses forgets the responses recorded so far.
func (b *Browser) ResetResponses() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for b.pending > 0 {
		b.cond.Wait()
	}
	b.records = nil
	clear(b.byID)
}

// Storage is everything script in the page can read without a request.
type Storage struct {
	// Cookie is document.cookie (HttpOnly cookies are not in it).
	Cookie         string            `json:"cookie"`
	LocalStorage   map[string]string `json:"localStorage"`
	SessionStorage map[string]string `json:"sessionStorage"`
	IndexedDB      []Database        `json:"indexedDB"`
	// Errors lists the stores the page could not read (an opaque origin
	// such as about:blank has no Web Storage).
	Errors []string `json:"errors"`
}

// Database is one IndexedDB database with every record of every store;
// keys and values are JSON (or String() for what JSON cannot hold).
type Database struct {
	Name    string `json:"name"`
	Version int    `json:"version"`
	Stores  []struct {
		Name    string `json:"name"`
		Records []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"records"`
	} `json:"stores"`
}

// Contains reports whether s occurs anywhere in the storage readout.
func (s Storage) Contains(sub string) bool {
	b, _ := json.Marshal(s)
	return strings.Contains(string(b), sub)
}

const storageJS = `(async () => {
  const out = { cookie: '', localStorage: {}, sessionStorage: {}, indexedDB: [], errors: [] };
  const str = (v) => { try { const j = JSON.stringify(v); return j === undefined ? String(v) : j; } catch { return String(v); } };
  try { out.cookie = document.cookie; } catch (e) { out.errors.push('cookie: ' + e); }
  for (const name of ['localStorage', 'sessionStorage']) {
    try {
      const s = window[name];
      for (let i = 0; i < s.length; i++) { const k = s.key(i); out[name][k] = s.getItem(k); }
    } catch (e) { out.errors.push(name + ': ' + e); }
  }
  try {
    for (const info of await indexedDB.databases()) {
      const db = await new Promise((resolve, reject) => {
        const r = indexedDB.open(info.name);
        r.onsuccess = () => resolve(r.result);
        r.onerror = () => reject(r.error);
      });
      const d = { name: info.name, version: info.version, stores: [] };
      for (const storeName of db.objectStoreNames) {
        const store = db.transaction(storeName, 'readonly').objectStore(storeName);
        const [keys, values] = await Promise.all([store.getAllKeys(), store.getAll()].map((req) => new Promise((resolve, reject) => {
          req.onsuccess = () => resolve(req.result);
          req.onerror = () => reject(req.error);
        })));
        d.stores.push({ name: storeName, records: keys.map((k, i) => ({ key: str(k), value: str(values[i]) })) });
      }
      db.close();
      out.indexedDB.push(d);
    }
  } catch (e) { out.errors.push('indexedDB: ' + e); }
  return out;
})()`

// Storage reads document.cookie, localStorage, sessionStorage and every
// IndexedDB database of the current page's origin.
func (b *Browser) Storage() Storage {
	b.t.Helper()
	var s Storage
	if err := b.eval(storageJS, &s); err != nil {
		b.t.Fatalf("read storage: %v (at %s)", err, b.location())
	}
	return s
}

func (b *Browser) capture() ([]byte, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.CaptureScreenshot())
}

// Screenshot captures the page now and keeps it; it is written to OutDir
// as <test>-<name>.png if the test fails (a picture of the logged-in SPA
// explains a later failure better than one of the error).
func (b *Browser) Screenshot(name string) {
	b.t.Helper()
	png, err := b.capture()
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return
	}
	b.mu.Lock()
	b.shots = append(b.shots, shot{name: name, png: png})
	b.mu.Unlock()
}

// SaveScreenshot captures the page and writes it to OutDir now, returning
// the file's path.
func (b *Browser) SaveScreenshot(name string) string {
	b.t.Helper()
	png, err := b.capture()
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	p, err := b.write(shot{name: name, png: png})
	if err != nil {
		b.t.Fatal(err)
	}
	return p
}

func (b *Browser) writeShots() []string {
	b.mu.Lock()
	shots := append([]shot(nil), b.shots...)
	b.mu.Unlock()
	var paths []string
	for _, s := range shots {
		p, err := b.write(s)
		if err != nil {
			b.t.Logf("%v", err)
			continue
		}
		paths = append(paths, p)
	}
	return paths
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func (b *Browser) write(s shot) (string, error) {
	if err := os.MkdirAll(b.OutDir, 0o755); err != nil {
		return "", fmt.Errorf("screenshot dir %s: %w", b.OutDir, err)
	}
	name := unsafeName.ReplaceAllString(b.t.Name()+"-"+s.name, "_") + ".png"
	p := filepath.Join(b.OutDir, name)
	if err := os.WriteFile(p, s.png, 0o644); err != nil {
		return "", fmt.Errorf("write screenshot %s: %w", p, err)
	}
	return p, nil
}

func defaultOutDir() string {
	if d := os.Getenv("BFFGATE_E2E_OUT"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "out")
}

func removeAllRetry(dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := os.RemoveAll(dir); err == nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
