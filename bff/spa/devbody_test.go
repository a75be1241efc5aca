package spa

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/edge/edgetest"
	"github.com/bffgate/bffgate/internal/obs"
)

// TestDevProxyBodyErrors: a chunked body the browser breaks (a bad
// chunk, an Authorization trailer) on its way to the dev server is
// answered and logged by kind: fasthttp's error texts quote the request
// bytes, which must reach neither the browser nor the log. A chunked body
// read to its end keeps the browser's connection.
func TestDevProxyBodyErrors(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	logs := &edgetest.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o, err := obs.New(obs.Config{Component: "gateway", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	app, err := edge.New(edge.Config{Obs: o, Fiber: fiber.Config{DisableStartupMessage: true, StreamRequestBody: true}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{DevURL: up.URL, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	app.Use(h)
	addr := strings.TrimPrefix(serve(t, app), "http://")
	head := "POST /src/upload HTTP/1.1\r\nHost: " + addr + "\r\nCookie: sid=" + edgetest.CookieSecret + "\r\nTransfer-Encoding: chunked\r\n\r\n"

	for name, body := range map[string]string{
		"bad chunk size":    "3\r\na=1\r\nzz" + edgetest.ForgedBearer + "\r\n0\r\n\r\n",
		"forbidden trailer": "3\r\na=1\r\n0\r\nAuthorization: Bearer " + edgetest.ForgedBearer + "\r\n\r\n",
		"bad trailer key":   "3\r\na=1\r\n0\r\nX " + edgetest.ForgedBearer + ": y\r\n\r\n",
	} {
		before := len(logs.String())
		r := edgetest.Exchange(t, addr, head+body)
		if r.Status < 400 {
			t.Errorf("%s: status %d, want an error", name, r.Status)
		}
		for _, secret := range []string{edgetest.CookieSecret, edgetest.ForgedBearer} {
			if edgetest.Reflects(r.Raw, secret) {
				t.Errorf("%s: the answer shows a request byte (%s): %s", name, secret, r.Raw)
			}
			if logged := logs.String()[before:]; edgetest.Reflects(logged, secret) {
				t.Errorf("%s: the log shows a request byte (%s): %s", name, secret, logged)
			}
		}
	}

	r := edgetest.Exchange(t, addr, head+"3\r\na=1\r\n0\r\n\r\n")
	if r.Status != 200 || r.Body != "ok" {
		t.Errorf("chunked upload: %d %q, want 200 ok", r.Status, r.Body)
	}
	if r.Closed {
		t.Errorf("a chunked body read to its end closed the browser's connection")
	}
}
