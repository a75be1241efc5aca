package spa

import (
	"bufio"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gofiber/fiber/v2"
)

const indexHTML = `<!doctype html><title>spa</title><script type="module" src="/assets/index-AbC123de.js"></script>`

var spaFiles = map[string]string{
	"index.html":                indexHTML,
	"assets/index-AbC123de.js":  "console.log('vite')",
	"assets/index-D8s-Ab1Z.css": "body{}",
	"app.3f9a1c2b.js":           "console.log('webpack')",
	"app.js":                    "console.log('unhashed')",
	"style.css":                 "body{color:red}",
	"logo.svg":                  "<svg/>",
	"manifest.webmanifest":      "{}",
	"docs/guide.txt":            "guide",
	".env":                      "SECRET=1",
	".git/config":               "[core]",
}

// newApp returns a fiber app whose only handler is the SPA.
func newApp(t *testing.T, cfg Config) *fiber.App {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	app.Use(h)
	return app
}

// sources returns the same files as an embedded-style FS and as a
// directory on disk, with a secret next to (outside) the directory.
func sources(t *testing.T) map[string]Config {
	t.Helper()
	mfs := fstest.MapFS{}
	parent := t.TempDir()
	dir := filepath.Join(parent, "dist")
	for name, body := range spaFiles {
		mfs[name] = &fstest.MapFile{Data: []byte(body)}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(parent, "secret.txt"), []byte("TOP SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A symbolic link inside the directory pointing outside it.
	if err := os.Symlink(filepath.Join(parent, "secret.txt"), filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	return map[string]Config{"FS": {FS: mfs}, "Dir": {Dir: dir}}
}

func get(t *testing.T, app *fiber.App, method, path string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := app.Test(req, -1)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

const navAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

func TestFiles(t *testing.T) {
	t.Parallel()
	for srcName, cfg := range sources(t) {
		t.Run(srcName, func(t *testing.T) {
			t.Parallel()
			app := newApp(t, cfg)
			cases := []struct {
				name, path, accept string
				status             int
				body, ctype, cache string
			}{
				{"root", "/", navAccept, 200, indexHTML, "text/html; charset=utf-8", "no-cache"},
				{"index", "/index.html", navAccept, 200, indexHTML, "text/html; charset=utf-8", "no-cache"},
				{"client route", "/items/42", navAccept, 200, indexHTML, "text/html; charset=utf-8", "no-cache"},
				{"client route via fetch", "/settings", "*/*", 200, indexHTML, "text/html; charset=utf-8", "no-cache"},
				{"client route not for HTML", "/items/42", "application/json", 404, "", "", "no-cache"},
				{"client route without Accept", "/items/42", "", 404, "", "", "no-cache"},
				{"vite asset", "/assets/index-AbC123de.js", "*/*", 200, "console.log('vite')", "text/javascript; charset=utf-8", cacheImmutable},
				{"vite css with dash in hash", "/assets/index-D8s-Ab1Z.css", "text/css", 200, "body{}", "text/css; charset=utf-8", cacheImmutable},
				{"webpack asset", "/app.3f9a1c2b.js", "*/*", 200, "console.log('webpack')", "text/javascript; charset=utf-8", cacheImmutable},
				{"unhashed asset", "/app.js", "*/*", 200, "console.log('unhashed')", "text/javascript; charset=utf-8", "no-cache"},
				{"css", "/style.css", "*/*", 200, "body{color:red}", "text/css; charset=utf-8", "no-cache"},
				{"svg", "/logo.svg", "*/*", 200, "<svg/>", "image/svg+xml", "no-cache"},
				{"manifest", "/manifest.webmanifest", "*/*", 200, "{}", "application/manifest+json", "no-cache"},
				{"missing asset is not index.html", "/assets/index-Zz999999.js", navAccept, 404, "not found\n", "text/plain; charset=utf-8", "no-cache"},
				{"directory is not listed", "/assets/", "*/*", 200, indexHTML, "text/html; charset=utf-8", "no-cache"},
				{"directory without HTML accept", "/docs", "application/json", 404, "", "", "no-cache"},
				{"dot file", "/.env", "*/*", 404, "", "", "no-cache"},
				{"dot directory", "/.git/config", "*/*", 404, "", "", "no-cache"},
				{"encoded traversal", "/%2e%2e/secret.txt", "*/*", 404, "", "", "no-cache"},
				{"encoded slash traversal", "/assets/..%2f..%2fsecret.txt", "*/*", 404, "", "", "no-cache"},
				{"backslash", "/assets\\..\\..\\secret.txt", "*/*", 404, "", "", "no-cache"},
			}
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					hdr := map[string]string{}
					if tc.accept != "" {
						hdr["Accept"] = tc.accept
					}
					resp, body := get(t, app, http.MethodGet, tc.path, hdr)
					if resp.StatusCode != tc.status {
						t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
					}
					if strings.Contains(body, "SECRET") {
						t.Fatal("served a file outside the SPA or a dot file")
					}
					if tc.body != "" && body != tc.body {
						t.Errorf("body %q, want %q", body, tc.body)
					}
					if tc.ctype != "" && resp.Header.Get("Content-Type") != tc.ctype {
						t.Errorf("Content-Type %q, want %q", resp.Header.Get("Content-Type"), tc.ctype)
					}
					if got := resp.Header.Get("Cache-Control"); got != tc.cache {
						t.Errorf("Cache-Control %q, want %q", got, tc.cache)
					}
					if tc.status == 200 && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
						t.Error("no X-Content-Type-Options: nosniff")
					}
				})
			}
			t.Run("etag", func(t *testing.T) {
				resp, _ := get(t, app, http.MethodGet, "/", map[string]string{"Accept": navAccept})
				etag := resp.Header.Get("ETag")
				if etag == "" {
					t.Fatal("no ETag")
				}
				resp, body := get(t, app, http.MethodGet, "/", map[string]string{"Accept": navAccept, "If-None-Match": etag})
				if resp.StatusCode != http.StatusNotModified || body != "" {
					t.Fatalf("conditional GET: %d %q", resp.StatusCode, body)
				}
			})
			t.Run("head", func(t *testing.T) {
				resp, body := get(t, app, http.MethodHead, "/style.css", nil)
				if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Type") != "text/css; charset=utf-8" {
					t.Fatalf("HEAD: %d %q %q", resp.StatusCode, body, resp.Header.Get("Content-Type"))
				}
			})
			t.Run("post", func(t *testing.T) {
				resp, _ := get(t, app, http.MethodPost, "/", nil)
				if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
					t.Fatalf("POST: %d", resp.StatusCode)
				}
			})
		})
	}
}

// TestTraversalOverTheWire sends raw request lines no HTTP client library
// would produce.
func TestTraversalOverTheWire(t *testing.T) {
	t.Parallel()
	for srcName, cfg := range sources(t) {
		t.Run(srcName, func(t *testing.T) {
			t.Parallel()
			base := serve(t, newApp(t, cfg))
			for _, target := range []string{
				"/../secret.txt", "/../../secret.txt", "/assets/../../secret.txt", "/%2e%2e/secret.txt",
				"/%2E%2E%2Fsecret.txt", "/..%5csecret.txt", "/link.txt", "//secret.txt", "/./../secret.txt",
			} {
				status, body := rawGet(t, base, target)
				if strings.Contains(body, "TOP SECRET") {
					t.Fatalf("%s served the secret (status %d)", target, status)
				}
				if status == 200 && !strings.Contains(body, "<!doctype html>") {
					t.Errorf("%s: status 200 with body %q", target, body)
				}
			}
		})
	}
}

func rawGet(t *testing.T, base, target string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serve runs app on a loopback port until the test ends.
func serve(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.Shutdown() })
	return "http://" + ln.Addr().String()
}

func TestDirServesRebuilds(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("v1")
	app := newApp(t, Config{Dir: dir})
	resp, body := get(t, app, http.MethodGet, "/", nil)
	etag := resp.Header.Get("ETag")
	if body != "v1" {
		t.Fatalf("body %q", body)
	}
	write("version 2")
	resp, body = get(t, app, http.MethodGet, "/", map[string]string{"If-None-Match": etag})
	if resp.StatusCode != 200 || body != "version 2" || resp.Header.Get("ETag") == etag {
		t.Fatalf("after rebuild: %d %q etag %q", resp.StatusCode, body, resp.Header.Get("ETag"))
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"nothing", Config{}, "no SPA configured"},
		{"missing dir", Config{Dir: filepath.Join(empty, "nope")}, "Config.Dir"},
		{"dir without index", Config{Dir: empty}, "no index.html"},
		{"fs without index", Config{FS: fstest.MapFS{"app.js": {}}}, "no index.html"},
		{"dev url with path", Config{DevURL: "http://localhost:5173/app"}, "Config.DevURL"},
		{"dev url scheme", Config{DevURL: "ftp://localhost:5173"}, "Config.DevURL"},
		{"dev url relative", Config{DevURL: "localhost:5173"}, "Config.DevURL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
	if _, err := New(Config{}); !errors.Is(err, ErrNoSource) {
		t.Fatalf("err = %v, want ErrNoSource", err)
	}
}

func TestHashedName(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"app.3f9a1c2b.js":              true,
		"static/js/main.3f9a1c2b.js":   true,
		"main.3f9a1c2b.chunk.js":       true,
		"assets/index-AbC123de.js":     true,
		"assets/index-D8s-Ab1Z.css":    true,
		"assets/vendor-BzJ3k_9a.js":    true,
		"assets/logo-4f2a9c1e.svg":     true,
		"app.js":                       false,
		"index.html":                   false,
		"app-settings.js":              false,
		"my-component.js":              false,
		"vendor.lodash.js":             false,
		"jquery-3.7.1.min.js":          false,
		"app.deadbeef.js":              false, // all letters: a word, not a hash
		"favicon.ico":                  false,
		"assets/index-abcdefgh.js":     false,
		"assets/hashed-dir/app.js":     false,
		"fonts/inter-v12-latin.woff2":  false,
		"chunk-ABCDEFGH":               false, // no extension
		"assets/index-AbC123de.js.map": false,
	}
	for name, want := range cases {
		if got := hashedName(name); got != want {
			t.Errorf("hashedName(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestAcceptsHTML(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		navAccept:                   true,
		"*/*":                       true,
		"text/html":                 true,
		"application/json":          false,
		"":                          false,
		"text/html;q=0, */*;q=0":    false,
		"image/avif,image/webp,*/*": true,
	}
	for accept, want := range cases {
		if got := acceptsHTML(accept); got != want {
			t.Errorf("acceptsHTML(%q) = %v, want %v", accept, got, want)
		}
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{"/", "/a/b.js", "/../x", "/.env", "//x", "/a/../../b", "/a\\..\\b", "/\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, ok := cleanName(p)
		if !ok {
			return
		}
		if name != "" && !fs.ValidPath(name) {
			t.Fatalf("cleanName(%q) = %q, not a valid fs path", p, name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == ".." || strings.HasPrefix(seg, ".") {
				t.Fatalf("cleanName(%q) = %q holds a dot segment", p, name)
			}
		}
	})
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
