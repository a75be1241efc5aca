package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/upstream/upstreamtest"
)

// TestUpstreamClosedKeptAliveConnection runs an API route against a real
// Node http server that closes idle connections after 200 ms, with the
// route keeping them for a minute: every request after a pause is sent
// into a connection Node has closed. A GET is sent again on a new
// connection and answers 200 (before, the retry took another dead
// connection from the pool and the browser got 502); a POST is not sent
// twice, and its 502 says why.
func TestUpstreamClosedKeptAliveConnection(t *testing.T) {
	t.Parallel()
	node := upstreamtest.StartNode(t, 200*time.Millisecond)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: node.URL, IdleTimeout: time.Minute}}, Registerer: prometheus.NewRegistry()})
	gw := startGateway(t, p, false, "tok", "")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	idle := func() {
		t.Helper()
		upstreamtest.ParallelGets(t, hc, 12, func(i int) string { return fmt.Sprintf("%s/api/warm/%d?delay=100", gw, i) })
		if !node.WaitAllClosed(5 * time.Second) {
			t.Fatalf("Node did not close its idle connections: %s", node)
		}
	}
	for round := range 3 {
		idle()
		res, err := hc.Get(gw + "/api/after-idle")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("round %d: GET after the upstream closed the pooled connections: HTTP %d %s, want 200 (%s)", round, res.StatusCode, body, node)
		}
	}

	if n := counterValue(t, p.metrics.retries.WithLabelValues(node.URL)); n < 3 {
		t.Errorf("bffgate_proxy_upstream_retries_total{upstream=%q} = %v after three GETs sent again, want at least 3", node.URL, n)
	}

	idle()
	res, err := hc.Post(gw+"/api/orders", "text/plain", strings.NewReader("order-1"))
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.NewDecoder(res.Body).Decode(&e)
	res.Body.Close()
	if res.StatusCode != http.StatusBadGateway || e.Error != "upstream_unavailable" ||
		!strings.Contains(e.Description, "closed an idle kept-alive connection") || !strings.Contains(e.Description, "not idempotent") ||
		!strings.Contains(e.Description, "gateway.routes[].idle_timeout") {
		t.Fatalf("POST into a connection the upstream closed: HTTP %d %+v, want 502 upstream_unavailable naming the closed kept-alive connection", res.StatusCode, e)
	}
}

// TestRouteIdleTimeout: a route's IdleTimeout under the upstream's
// keep-alive timeout (Node's default 5 s) makes the gateway close idle
// connections itself, before Node does.
func TestRouteIdleTimeout(t *testing.T) {
	t.Parallel()
	node := upstreamtest.StartNode(t, 0)
	p := newProxy(t, Config{Routes: []Route{{Prefix: "/api", Upstream: node.URL, IdleTimeout: 300 * time.Millisecond}}})
	gw := startGateway(t, p, false, "tok", "")
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()

	upstreamtest.ParallelGets(t, hc, 8, func(i int) string { return fmt.Sprintf("%s/api/warm/%d?delay=100", gw, i) })
	if !node.WaitAllClosed(10 * time.Second) {
		t.Fatalf("idle connections not closed: %s", node)
	}
	if opened, byClient, _ := node.Conns(); opened == 0 || byClient != opened {
		t.Fatalf("%s; want every idle connection closed by the gateway (routes[].idle_timeout 300ms) before Node's 5 s", node)
	}
}
