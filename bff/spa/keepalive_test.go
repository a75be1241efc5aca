package spa

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/bffgate/bffgate/internal/upstream/upstreamtest"
)

// devGateway serves the dev-server proxy for cfg the way the gateway
// does (request bodies streamed) on a loopback port.
func devGateway(t *testing.T, cfg Config) string {
	t.Helper()
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, StreamRequestBody: true})
	app.Use(h)
	return serve(t, app)
}

// TestDevProxyReusedConnectionClosed runs the dev proxy against a real
// Node http server that closes idle connections after 200 ms while the
// proxy keeps them for a minute, as Vite (5 s) did against the old 30 s:
// a GET after a pause goes into a closed connection, and must be sent
// again on a new one (200), not answered "did not answer" (502). A POST
// is not sent twice, and the 502 names the cause and the setting.
func TestDevProxyReusedConnectionClosed(t *testing.T) {
	t.Parallel()
	node := upstreamtest.StartNode(t, 200*time.Millisecond)
	base := devGateway(t, Config{DevURL: node.URL, DevIdleTimeout: time.Minute, Logger: quiet()})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	idle := func() {
		t.Helper()
		upstreamtest.ParallelGets(t, hc, 12, func(i int) string { return fmt.Sprintf("%s/src/module%d.ts?delay=100", base, i) })
		if !node.WaitAllClosed(5 * time.Second) {
			t.Fatalf("Node did not close its idle connections: %s", node)
		}
	}
	for round := range 3 {
		idle()
		res, err := hc.Get(base + "/src/main.ts")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"url":"/src/main.ts"`) {
			t.Fatalf("round %d: GET after the dev server closed the pooled connections: HTTP %d %q, want 200 (%s)", round, res.StatusCode, body, node)
		}
	}

	idle()
	res, err := hc.Post(base+"/api-in-vite", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "closed an idle kept-alive connection") ||
		!strings.Contains(string(body), "gateway.spa.dev_idle_timeout") {
		t.Fatalf("POST into a connection the dev server closed: HTTP %d %q, want 502 naming the closed kept-alive connection and gateway.spa.dev_idle_timeout", res.StatusCode, body)
	}

	// The POST's body reaches the dev server on a live connection.
	res, err = hc.Post(base+"/api-in-vite", "application/json", strings.NewReader(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"body":"{\"a\":1}"`) {
		t.Fatalf("POST on a live connection: HTTP %d %q, want 200 with the body echoed", res.StatusCode, body)
	}
}

// TestDevProxyIdleTimeoutDefault: with the default idle timeout the
// proxy closes idle connections to a Node dev server (keep-alive 5 s, as
// Vite's) itself, before Node does, so no request races Node's close.
func TestDevProxyIdleTimeoutDefault(t *testing.T) {
	t.Parallel()
	node := upstreamtest.StartNode(t, 0)
	base := devGateway(t, Config{DevURL: node.URL, Logger: quiet()})
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	upstreamtest.ParallelGets(t, hc, 8, func(i int) string { return fmt.Sprintf("%s/src/module%d.ts?delay=100", base, i) })
	if !node.WaitAllClosed(15 * time.Second) {
		t.Fatalf("idle connections not closed: %s", node)
	}
	if opened, byClient, _ := node.Conns(); opened == 0 || byClient != opened {
		t.Fatalf("%s; want every idle connection closed by the gateway (default gateway.spa.dev_idle_timeout) before Node's 5 s keep-alive timeout", node)
	}
}
