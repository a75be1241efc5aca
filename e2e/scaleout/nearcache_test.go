package scaleout

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
	sredis "github.com/bffgate/bffgate/session/redis"
)

// TestLogoutAcrossCachedGateways: with the default configuration each
// gateway keeps the sessions it read in its near cache (the cache serves
// most of the calls below, as its hit counter shows). A logout through
// one gateway is honoured by the other within the near cache's staleness
// bound (gateway.session.redis_cache.max_staleness, 1 s by default), and
// normally on the very next call: 401, not the cached session. Both
// directions, several rounds (the user signs in through A, whose callback
// the issuer has registered).
func TestLogoutAcrossCachedGateways(t *testing.T) {
	a, b := pair(t)
	ctx := context.Background()
	gws := []struct {
		name string
		s    *stack.Stack
	}{{"A", a}, {"B", b}}
	hitsBefore := [2]float64{cacheHits(t, a), cacheHits(t, b)}
	for round := range 6 {
		from, to := gws[round%2], gws[1-round%2]
		u := newUser(t)
		cookie := u.mustLogin(a.GatewayURL) // the issuer knows A's redirect URI
		// Both gateways read the session, then serve it from memory.
		for range 3 {
			for _, gw := range gws {
				if r, err := u.whoami(ctx, gw.s.GatewayURL, cookie); err != nil || r.Status != http.StatusOK {
					t.Fatalf("round %d: GET /api/whoami through gateway %s: %v %s, want 200", round, gw.name, err, r)
				}
			}
		}
		r, err := u.Call(ctx, http.MethodPost, from.s.GatewayURL+"/bff/logout", cookie)
		if err != nil || r.Status/100 != 3 {
			t.Fatalf("round %d: POST /bff/logout through gateway %s: %v %s, want a redirect", round, from.name, err, r)
		}
		// The other gateway hears of the logout when Redis passes the
		// invalidation on, sent with the write's reply: normally before
		// the next call (one round trip), and never later than the
		// staleness bound after the logout returned, however busy it is
		// (it serves from memory only while a probe younger than the
		// bound vouches for its channel; README, "Near cache").
		done := time.Now()
		for stale := 0; ; stale++ {
			start := time.Now()
			r, err := u.whoami(ctx, to.s.GatewayURL, cookie)
			if err == nil && r.Status == http.StatusUnauthorized {
				if stale > 0 {
					t.Logf("round %d: gateway %s served the ended session %d more times, for %v after the logout through %s returned", round, to.name, stale, start.Sub(done), from.name)
				}
				break
			}
			if err != nil || r.Status != http.StatusOK {
				t.Fatalf("round %d: an API call through gateway %s after the logout through %s: %v %s, want 401", round, to.name, from.name, err, r)
			}
			if start.Sub(done) > defaultMaxStaleness {
				t.Fatalf("round %d: gateway %s still served the session %v after the logout through %s returned (the bound is %v): %s",
					round, to.name, start.Sub(done), from.name, defaultMaxStaleness, r)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if r, err := u.Call(ctx, http.MethodGet, to.s.GatewayURL+"/bff/user", cookie); err != nil || r.Status != http.StatusUnauthorized {
			t.Errorf("round %d: GET /bff/user through gateway %s after the logout through %s: %v %s, want 401", round, to.name, from.name, err, r)
		}
	}
	for i, gw := range gws {
		if hits := cacheHits(t, gw.s) - hitsBefore[i]; hits < 6 {
			t.Errorf("gateway %s served %v reads from its near cache, want at least one per round: is gateway.session.redis_cache on by default?", gw.name, hits)
		}
	}
}

// defaultMaxStaleness is gateway.session.redis_cache.max_staleness's
// default, which the stacks here run with.
const defaultMaxStaleness = sredis.DefaultMaxStaleness

// cacheHits reads bffgate_session_redis_cache_hits_total from the
// gateway's /metrics.
func cacheHits(t *testing.T, s *stack.Stack) float64 {
	t.Helper()
	resp, err := testhttp.Client.Get(s.GatewayURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.HasPrefix(line, "bffgate_session_redis_cache_hits_total ") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			return v
		}
	}
	t.Fatal("gateway /metrics has no bffgate_session_redis_cache_hits_total")
	return 0
}
