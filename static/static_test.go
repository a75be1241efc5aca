package static_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/bff/spa"
	"github.com/bffgate/bffgate/static"
)

func read(t *testing.T, name string) string {
	t.Helper()
	b, err := fs.ReadFile(static.FS(), name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(b)
}

// TestElementIDs pins the ids the end-to-end browser tests use.
func TestElementIDs(t *testing.T) {
	t.Parallel()
	html := read(t, "index.html")
	for _, id := range []string{"login", "logout", "user-name", "user-sub", "session-expires", "call-api",
		"api-result", "items", "new-item-title", "add-item", "status"} {
		if n := strings.Count(html, `id="`+id+`"`); n != 1 {
			t.Errorf("id %q appears %d times in index.html, want once", id, n)
		}
	}
	if !regexp.MustCompile(`id="status"[^>]*aria-live="polite"`).MatchString(html) {
		t.Error("#status is not an aria-live region")
	}
	if !strings.Contains(html, `<label for="new-item-title">`) {
		t.Error("#new-item-title has no label")
	}
	if !strings.Contains(read(t, "app.js"), "'delete-item'") {
		t.Error("item rows have no .delete-item button")
	}
}

// TestCSPFriendly: no inline script, style or handler, nothing loaded from
// another origin, so `default-src 'self'` is enough.
func TestCSPFriendly(t *testing.T) {
	t.Parallel()
	html := read(t, "index.html")
	for _, m := range regexp.MustCompile(`(?is)<script\b[^>]*>(.*?)</script>`).FindAllStringSubmatch(html, -1) {
		if strings.TrimSpace(m[1]) != "" || !strings.Contains(m[0], `src="/`) {
			t.Errorf("inline or external script: %s", m[0])
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`(?i)<style`),
		regexp.MustCompile(`(?i)\sstyle=`),
		regexp.MustCompile(`(?i)\son[a-z]+=`),
		regexp.MustCompile(`(?i)(src|href)="(https?:)?//[^"]*\.(js|css|woff2?|ttf)"`),
		regexp.MustCompile(`(?i)javascript:`),
	} {
		if loc := bad.FindString(html); loc != "" {
			t.Errorf("index.html holds %q", loc)
		}
	}
	css := read(t, "app.css")
	if regexp.MustCompile(`(?i)@import|url\(\s*['"]?(https?:)?//`).MatchString(css) {
		t.Error("app.css loads something from another origin")
	}
}

// TestNoBrowserStorage: the SPA keeps nothing in the browser, and builds
// the page without innerHTML.
func TestNoBrowserStorage(t *testing.T) {
	t.Parallel()
	js := read(t, "app.js")
	for _, bad := range []string{"localStorage", "sessionStorage", "indexedDB", "document.cookie", "innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"} {
		if strings.Contains(js, bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
	for _, want := range []string{"const CSRF_HEADER = 'X-CSRF'", "credentials: 'same-origin'", "'/bff/user'", "'/api/whoami'", "'/api/items'", "bff:logout_url", "/bff/login?returnUrl=", "session_expired"} {
		if !strings.Contains(js, want) {
			t.Errorf("app.js lacks %s", want)
		}
	}
}

// TestServedBySPAHandler serves the files the way the gateway does.
func TestServedBySPAHandler(t *testing.T) {
	t.Parallel()
	h, err := spa.New(spa.Config{FS: static.FS()})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(h)
	for path, ctype := range map[string]string{
		"/":            "text/html; charset=utf-8",
		"/app.js":      "text/javascript; charset=utf-8",
		"/app.css":     "text/css; charset=utf-8",
		"/favicon.svg": "image/svg+xml",
		"/items":       "text/html; charset=utf-8", // history fallback
	} {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.Header.Set("Accept", "text/html,*/*;q=0.8")
		resp, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ctype || len(b) == 0 {
			t.Errorf("%s: %d %q (%d bytes)", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
		}
	}
}
