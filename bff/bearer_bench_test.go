package bff

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/internal/testhttp"
)

// BenchmarkMCPToolCall is one tools/call through the gateway over
// loopback: the bearer token verified (signature with the cached JWKS,
// iss, aud, exp, scope), the body read and decided by the tool policy,
// the gateway's client token attached, the upstream's JSON answer
// streamed back. BenchmarkPublicCall is the same request on a route
// that checks nothing (policy none), for the difference.
func BenchmarkMCPToolCall(b *testing.B) {
	e, _, _ := mcpEnv(b)
	tok := clientToken(b, e.issuer, agentID, "profile")
	benchCalls(b, e.gwURL+"/mcp/", map[string]string{"Authorization": "Bearer " + tok})
}

func BenchmarkPublicCall(b *testing.B) {
	e, _, _ := mcpEnv(b)
	benchCalls(b, e.gwURL+"/pub/", map[string]string{"X-CSRF": "1"})
}

func benchCalls(b *testing.B, u string, hdr map[string]string) {
	body := toolCall(1, "search")
	c := &http.Client{Transport: testhttp.Transport()}
	do := func() {
		req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	do() // keys fetched, client token cached, connections open
	b.ResetTimer()
	for b.Loop() {
		do()
	}
}
