package bff

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkUser measures GET /bff/user?slide=false over loopback HTTP: the
// per-request session read (cookie decode, or bbolt lookup and ticket
// open) plus the gateway's fixed cost. It reports the session cookie's
// size for a session from the embedded issuer (RS256 tokens).
func BenchmarkUser(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(string(kind), func(b *testing.B) {
			e := newEnv(b, kind, envOptions{})
			br := e.browser()
			p := br.login("alice", alicePassword, "/home")
			if p.status != 200 {
				b.Fatalf("login: %d", p.status)
			}
			client := br.noRedirect()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				// A new request each time: the client's jar adds the
				// cookies to the request it is given.
				req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/bff/user?slide=false", nil)
				req.Header.Set("X-CSRF", "1")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.ReportMetric(float64(len(br.handle())), "cookie-bytes")
		})
	}
}

// BenchmarkAPI measures one proxied API call over loopback HTTP (session
// read, token check, header rewrite, upstream round trip), next to the
// same call sent straight to the upstream.
func BenchmarkAPI(b *testing.B) {
	for _, kind := range storeKinds {
		b.Run(string(kind), func(b *testing.B) {
			e := newEnv(b, kind, envOptions{})
			br := e.browser()
			if p := br.login("alice", alicePassword, "/home"); p.status != 200 {
				b.Fatalf("login: %d", p.status)
			}
			cookie := br.cookieHeader()
			client := &http.Client{}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, e.gwURL+"/api/bench", nil)
				req.Header.Set("X-CSRF", "1")
				req.Header.Set("Cookie", cookie)
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) {
		e := newEnv(b, kindBolt, envOptions{})
		br := e.browser()
		if p := br.login("alice", alicePassword, "/home"); p.status != 200 {
			b.Fatalf("login: %d", p.status)
		}
		s := br.session()
		client := &http.Client{}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodGet, e.upstream.srv.URL+"/api/bench", nil)
			req.Header.Set("Authorization", "Bearer "+s.AccessToken)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
