package bff

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
	"golang.org/x/oauth2"
)

func TestCSRFGuard(t *testing.T) {
	t.Parallel()
	g := &csrfGuard{header: "X-CSRF", value: "1",
		origins: map[string]bool{"https://app.example.test": true, "https://admin.example.test": true},
		reject: func(c *fiber.Ctx, reason string) error {
			return writeError(c, csrfError("X-CSRF", "1", reason))
		}}
	app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
	app.Use(g.handler)
	app.All("/*", func(c *fiber.Ctx) error { return c.SendString("ok") })
	cases := []struct {
		name   string
		header map[string]string
		want   int
		code   string
	}{
		{"no header", nil, 403, "csrf_header_missing"},
		{"wrong value", map[string]string{"X-CSRF": "0"}, 403, "csrf_header_invalid"},
		{"header", map[string]string{"X-CSRF": "1"}, 200, ""},
		{"same origin", map[string]string{"X-CSRF": "1", "Origin": "https://app.example.test", "Sec-Fetch-Site": "same-origin"}, 200, ""},
		{"allowed origin default port", map[string]string{"X-CSRF": "1", "Origin": "https://ADMIN.example.test:443"}, 200, ""},
		{"same-site fetch", map[string]string{"X-CSRF": "1", "Sec-Fetch-Site": "same-site"}, 200, ""},
		{"cross-site fetch", map[string]string{"X-CSRF": "1", "Sec-Fetch-Site": "cross-site"}, 403, "cross_site_request"},
		{"foreign origin", map[string]string{"X-CSRF": "1", "Origin": "https://evil.example"}, 403, "cross_site_request"},
		{"null origin", map[string]string{"X-CSRF": "1", "Origin": "null"}, 403, "cross_site_request"},
		{"http origin", map[string]string{"X-CSRF": "1", "Origin": "http://app.example.test"}, 403, "cross_site_request"},
	}
	for _, tc := range cases {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				req := httptest.NewRequest(method, "/api/x", nil)
				for k, v := range tc.header {
					req.Header.Set(k, v)
				}
				resp, err := app.Test(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
				}
				if tc.code != "" {
					var b strings.Builder
					buf := make([]byte, 512)
					n, _ := resp.Body.Read(buf)
					b.Write(buf[:n])
					if !strings.Contains(b.String(), `"error":"`+tc.code+`"`) {
						t.Fatalf("body %s, want error %s", b.String(), tc.code)
					}
				}
			})
		}
	}
}

func TestCookieChunks(t *testing.T) {
	t.Parallel()
	jar := newCookieJar("__Host-bff", "Lax", true, "/")
	for _, n := range []int{1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 17} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			handle := strings.Repeat("a", n/2) + strings.Repeat("b", n-n/2)
			app := fiber.New(fiber.Config{ReadBufferSize: 64 << 10})
			app.Get("/w", func(c *fiber.Ctx) error { return jar.writeHandle(c, handle, time.Now().Add(time.Hour)) })
			app.Get("/r", func(c *fiber.Ctx) error { return c.SendString(jar.readHandle(c)) })
			resp, err := app.Test(httptest.NewRequest("GET", "/w", nil))
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/r", nil)
			for _, ck := range resp.Cookies() {
				if !ck.Secure || !ck.HttpOnly || ck.Path != "/" || ck.SameSite != http.SameSiteLaxMode {
					t.Fatalf("cookie %s attributes: %+v", ck.Name, ck)
				}
				if len(ck.Value) > chunkSize {
					t.Fatalf("cookie %s has %d bytes", ck.Name, len(ck.Value))
				}
				req.AddCookie(ck)
			}
			if want := (n + chunkSize - 1) / chunkSize; len(resp.Cookies()) != want {
				t.Fatalf("%d cookies, want %d", len(resp.Cookies()), want)
			}
			resp, err = app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, n+10)
			got := 0
			for {
				k, err := resp.Body.Read(buf[got:])
				got += k
				if err != nil || k == 0 {
					break
				}
			}
			if string(buf[:got]) != handle {
				t.Fatalf("read back %d bytes, want %d", got, n)
			}
		})
	}
	t.Run("read from raw headers", func(t *testing.T) {
		app := fiber.New()
		app.Get("/r", func(c *fiber.Ctx) error { return c.SendString(jar.readHandle(c)) })
		for _, tc := range []struct {
			name    string
			cookies []string // Cookie header lines
			want    string
		}{
			{"none", nil, ""},
			{"others only", []string{"theme=dark; __Host-bffx=1"}, ""},
			{"base", []string{"a=1; __Host-bff=AA=="}, "AA=="},
			{"chunks out of order", []string{"__Host-bff.2=C; __Host-bff=A; x=y; __Host-bff.1=B"}, "ABC"},
			{"chunks over two headers", []string{"__Host-bff=A", "__Host-bff.1=B"}, "AB"},
			{"gap stops", []string{"__Host-bff=A; __Host-bff.2=C"}, "A"},
			{"chunk without base", []string{"__Host-bff.1=B"}, ""},
			{"first of a repeated name", []string{"__Host-bff=A; __Host-bff=Z"}, "A"},
			{"not a chunk name", []string{"__Host-bff=A; __Host-bff.01=B; __Host-bff.1x=B; __Host-bff.16=B"}, "A"},
			{"spaces", []string{"  __Host-bff = A ;__Host-bff.1=B  "}, "AB"},
		} {
			req := httptest.NewRequest("GET", "/r", nil)
			for _, h := range tc.cookies {
				req.Header.Add("Cookie", h)
			}
			resp, err := app.Test(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			if string(got) != tc.want {
				t.Errorf("%s: readHandle = %q, want %q", tc.name, got, tc.want)
			}
		}
	})
	t.Run("too large", func(t *testing.T) {
		app := fiber.New(fiber.Config{ErrorHandler: errorHandler})
		app.Get("/w", func(c *fiber.Ctx) error {
			return jar.writeHandle(c, strings.Repeat("x", maxChunks*chunkSize+1), time.Time{})
		})
		resp, err := app.Test(httptest.NewRequest("GET", "/w", nil))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 500 || len(resp.Cookies()) != 0 {
			t.Fatalf("status %d, %d cookies", resp.StatusCode, len(resp.Cookies()))
		}
	})
}

func TestReplayCache(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	r := newReplayCache(3)
	if !r.add("a", now.Add(time.Minute), now) || r.add("a", now.Add(time.Minute), now) {
		t.Fatal("a: first add must succeed, second fail")
	}
	if !r.add("a", now.Add(3*time.Minute), now.Add(2*time.Minute)) {
		t.Fatal("an expired entry must be accepted again")
	}
	r.add("b", now.Add(10*time.Minute), now)
	r.add("c", now.Add(20*time.Minute), now)
	r.add("d", now.Add(30*time.Minute), now) // evicts the earliest expiry (a)
	if len(r.seen) != 3 || r.add("d", now.Add(time.Hour), now) {
		t.Fatalf("cache %v", r.seen)
	}
}

func TestRefreshExpiry(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	jwt := "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE3MDAwMDM2MDB9.c2ln" // exp 1700003600
	cases := []struct {
		name string
		tok  *oauth2.Token
		want time.Time
	}{
		{"jwt", &oauth2.Token{RefreshToken: jwt}, time.Unix(1_700_003_600, 0)},
		{"opaque", &oauth2.Token{RefreshToken: "opaque"}, time.Time{}},
		{"refresh_expires_in", (&oauth2.Token{RefreshToken: "opaque"}).WithExtra(map[string]any{"refresh_expires_in": float64(1800)}), now.Add(30 * time.Minute)},
		{"garbage jwt", &oauth2.Token{RefreshToken: "a.!!!.c"}, time.Time{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := refreshExpiry(tc.tok, now); !got.Equal(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// FuzzFlowCookie feeds arbitrary flow cookie values to the callback's
// lookup: none may open, and none may panic.
func FuzzFlowCookie(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	jar := newCookieJar("__Host-bff", "Lax", true, "/")
	fs := newFlowSealer([]KeyPair{{Hash: make([]byte, 32), Block: make([]byte, 32)}}, jar, 5, func() time.Time { return now })
	app := fiber.New()
	f.Add("state", "")
	f.Add("state", "MTcwMDAwMDAwMHxhYmN8ZGVm")
	f.Add("", "x")
	f.Fuzz(func(t *testing.T, state, value string) {
		c := app.AcquireCtx(&fasthttp.RequestCtx{})
		defer app.ReleaseCtx(c)
		if state != "" {
			c.Request().Header.SetCookie(fs.flowCookieName(state), value)
		}
		if _, _, ok := fs.find(c, state); ok {
			t.Fatalf("a forged flow cookie opened: state %q value %q", state, value)
		}
	})
}
