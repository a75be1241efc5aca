package topology

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/session"
	sessionredis "github.com/bffgate/bffgate/session/redis"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// cachedStore is a session store with the near cache on, its listener
// running until the test ends, and the registry of its metrics.
type cachedStore struct {
	*sessionredis.Store
	reg *prometheus.Registry
}

func newCachedStore(t *testing.T, rdb goredis.UniversalClient, prefix string, now func() time.Time) cachedStore {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := sessionredis.New(rdb, sessionredis.Config{Prefix: prefix, Now: now, Registerer: reg,
		// 3 s rather than 1: a busy machine that holds the prober back for
		// a second must not turn the reads the test expects from the cache
		// into bypasses.
		Cache: sessionredis.CacheConfig{Entries: sessionredis.DefaultCacheEntries, MaxStaleness: 3 * time.Second}})
	if err != nil {
		t.Fatalf("session/redis.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { st.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	cs := cachedStore{st, reg}
	waitFor(t, "the near cache's channel verified", func() (bool, error) {
		return cs.metric(t, "bffgate_session_redis_cache_verified") == 1, nil
	})
	return cs
}

// metric reads a counter or gauge of the store's registry (0 if absent).
func (s cachedStore) metric(t *testing.T, name string) float64 {
	t.Helper()
	fams, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		v := 0.0
		for _, m := range f.GetMetric() {
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
		return v
	}
	return 0
}

// runCachedSessionSuite runs the session store's contract suite with the
// near cache on.
func runCachedSessionSuite(t *testing.T, rdb goredis.UniversalClient) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		return newCachedStore(t, rdb, randomPrefix("cached"), now)
	})
}

// testNearCache runs two instances' stores with near caches on clients a
// and b: B serves a session A made from its cache, and every write through
// A (an update, a logout, a back-channel logout by sid) reaches B's
// channel (classic pub/sub: on a Cluster, whichever node each client
// subscribed to), after which B serves the new record or refuses the
// ended session.
func testNearCache(t *testing.T, a, b goredis.UniversalClient) {
	ctx := t.Context()
	prefix := randomPrefix("near")
	sa, sb := newCachedStore(t, a, prefix, nil), newCachedStore(t, b, prefix, nil)
	for i, tc := range []struct {
		name  string
		write func(h string) error
		gone  bool
	}{
		{"update", func(h string) error {
			_, err := sa.Update(ctx, h, func(s *session.Session) error { s.AccessToken = "rotated"; return nil })
			return err
		}, false},
		{"logout", func(h string) error { return sa.Delete(ctx, h) }, true},
		{"back-channel logout", func(string) error { _, err := sa.EndBySID(ctx, "sid-3"); return err }, true},
	} {
		// Session i+1 carries sid-(i+1): each write touches one record.
		h, err := sa.Create(ctx, sessiontest.Sample(time.Now(), i+1))
		if err != nil {
			t.Fatal(err)
		}
		hits := sb.metric(t, "bffgate_session_redis_cache_hits_total")
		for range 2 {
			if _, err := sb.Get(ctx, h); err != nil {
				t.Fatalf("%s: B reads the session A made: %v", tc.name, err)
			}
		}
		if sb.metric(t, "bffgate_session_redis_cache_hits_total") != hits+1 {
			t.Fatalf("%s: B did not serve its second read from the near cache", tc.name)
		}
		heard := sb.metric(t, "bffgate_session_redis_cache_invalidations_total")
		if err := tc.write(h); err != nil {
			t.Fatalf("%s through A: %v", tc.name, err)
		}
		waitFor(t, tc.name+" through A heard by B", func() (bool, error) {
			return sb.metric(t, "bffgate_session_redis_cache_invalidations_total") > heard, nil
		})
		got, err := sb.Get(ctx, h)
		switch {
		case tc.gone && !errors.Is(err, session.ErrNotFound):
			t.Errorf("B after A's %s: %+v, %v; want not found", tc.name, got, err)
		case !tc.gone && (err != nil || got.AccessToken != "rotated"):
			t.Errorf("B after A's %s: %+v, %v; want the new record", tc.name, got, err)
		}
	}
}
