package demoapi

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/edge/edgetest"
)

// TestEdge runs the listener contract of internal/edge against the demo
// API over TCP: ambiguous framing refused, parse errors answered and
// logged without the request's bytes, a compressed item body 415 (fiber's
// c.Body() inflated it), and /metrics intact after mixed methods and
// paths in parallel. Not parallel: it measures the process's allocations.
func TestEdge(t *testing.T) {
	ti := newTestIssuer(t)
	key := ti.addKey("k1", jose.ES256)
	clk := newClock()
	logs := &edgetest.LogBuffer{}
	reg := prometheus.NewRegistry()
	a := newTestAPI(t, Config{Issuer: ti.srv.URL, Audience: testAudience, Now: clk.Now, Registerer: reg, Gatherer: reg,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	tok := sign(t, key, "at+jwt", ti.claims("alice", clk.Now()))
	edgetest.Run(t, edgetest.Listener{
		Addr:            strings.TrimPrefix(serve(t, a.App()), "http://"),
		Log:             logs.String,
		BodyPath:        "/api/items",
		BodyContentType: "application/json",
		Header:          http.Header{"Authorization": {"Bearer " + tok}},
		WantCode:        "invalid_request",
		Paths:           []string{"/api/whoami", "/api/items", "/healthz", "/nowhere"},
		Metrics:         "/metrics",
	})
}
