package issuer_test

import (
	"log/slog"
	"testing"

	"github.com/bffgate/bffgate/internal/edge/edgetest"
	"github.com/bffgate/bffgate/issuer"
)

// TestEdge runs the listener contract of internal/edge against the issuer
// over TCP: ambiguous framing refused, parse errors answered and logged
// without the request's bytes, compressed bodies 415 without inflating
// them (the 333-byte gzip-in-gzip /token POST that grew the process by
// 400 MB), and /metrics intact after mixed load. Not parallel: it
// measures the process's allocations.
func TestEdge(t *testing.T) {
	logs := &edgetest.LogBuffer{}
	e := start(t, envOptions{cfg: func(c *issuer.Config) {
		c.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	edgetest.Run(t, edgetest.Listener{
		Addr:     e.addr,
		Log:      logs.String,
		BodyPath: "/token",
		WantCode: "invalid_request",
		Paths:    []string{"/.well-known/openid-configuration", "/jwks", "/userinfo", "/nowhere"},
		Metrics:  "/metrics",
	})
}
