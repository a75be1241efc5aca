package topology

import (
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/session/sessiontest"
)

// TestCluster runs bffgate's Redis stores and the bffgate binary on a
// three-master Redis Cluster.
func TestCluster(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	rdb := c.client(t)

	t.Run("SessionStore", func(t *testing.T) { runSessionSuite(t, rdb) })
	t.Run("SessionStoreCached", func(t *testing.T) { runCachedSessionSuite(t, rdb) })
	// Two instances' near caches on their own clients: every write is
	// heard by the other's subscriber, wherever each subscribed.
	t.Run("NearCache", func(t *testing.T) { testNearCache(t, rdb, c.client(t)) })
	t.Run("IssuerStore", func(t *testing.T) { runIssuerSuite(t, rdb) })
	t.Run("EndedRecords", func(t *testing.T) { testEnded(t, rdb) })

	// Sessions carry no hash tag, so a Cluster spreads them over every
	// shard: the gateway's load scales with the shards.
	t.Run("SessionsSpreadOverShards", func(t *testing.T) {
		ctx := t.Context()
		prefix := randomPrefix("spread")
		st := newSessionStore(t, rdb, prefix, nil)
		const n = 300
		now := time.Now()
		for i := range n {
			if _, err := st.Create(ctx, sessiontest.Sample(now, i)); err != nil {
				t.Fatalf("Create %d: %v", i, err)
			}
		}
		total := 0
		spread := map[string]int{}
		for addr, keys := range keysPerNode(t, rdb, prefix+"r:*") {
			spread[addr] = len(keys)
			total += len(keys)
		}
		if total != n {
			t.Fatalf("the masters hold %d session records, want %d", total, n)
		}
		// Each of 3 masters misses all 300 with probability (2/3)^300.
		for _, addr := range c.addrs {
			if spread[addr] == 0 {
				t.Errorf("master %s holds none of the %d session records (per master: %v); sessions must spread over every shard", addr, n, spread)
			}
		}
		t.Logf("session records per master: %v", spread)
	})

	// Every issuer key carries the {issuer} hash tag: one slot, so that
	// the issuer's multi-key transactions and scripts never cross slots.
	t.Run("IssuerKeysInOneSlot", func(t *testing.T) {
		ctx := t.Context()
		prefix := randomPrefix("oneslot")
		st := newIssuerStore(t, rdb, prefix)
		issuerFlow(t, st, "a")
		want, err := rdb.ClusterKeySlot(ctx, "{issuer}").Result()
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]bool{}
		holders := 0
		for addr, keys := range keysPerNode(t, rdb, prefix+"*") {
			if len(keys) > 0 {
				holders++
			}
			for _, k := range keys {
				if !strings.HasPrefix(k, prefix+"{issuer}:") {
					t.Errorf("issuer key %q on %s lacks the {issuer} hash tag after the prefix", k, addr)
					continue
				}
				slot, err := rdb.ClusterKeySlot(ctx, k).Result()
				if err != nil || slot != want {
					t.Errorf("issuer key %q is in slot %d (%v), want %d", k, slot, err, want)
				}
				kind, _, _ := strings.Cut(strings.TrimPrefix(k, prefix+"{issuer}:"), ":")
				kinds[kind] = true
			}
		}
		if holders != 1 {
			t.Errorf("issuer keys are on %d masters, want exactly 1", holders)
		}
		for _, k := range []string{"keys", "secret", "code", "grant", "refresh", "grant-refresh", "sid-grants", "deny", "denylog", "denyseq", "expiry", "login"} {
			if !kinds[k] {
				t.Errorf("no %q key was written (kinds seen: %v); the flow must exercise every kind", k, kinds)
			}
		}
	})

	// A revocation at one issuer instance is pushed to another's
	// subscriber; classic pub/sub is broadcast over the cluster bus, so a
	// subscriber on any node (where a client may stay after a resharding)
	// gets it too.
	t.Run("DenylistPush", func(t *testing.T) {
		var nodes []*goredis.Client
		for _, n := range c.nodes {
			nodes = append(nodes, n.client(t))
		}
		testDenylistPush(t, rdb, c.client(t), nodes...)
	})

	// The bffgate binary with redis.cluster_addrs and both stores on
	// redis: login, /bff/user, the API through the gateway (refreshing
	// the access token each time), /readyz, and logout; the session and
	// the issuer's state are on the cluster.
	t.Run("Gateway", func(t *testing.T) {
		prefix := randomPrefix("gateway")
		s := startGateway(t, c.yaml(prefix))
		b, cookie := login(t, s)
		records, issuerKeys := 0, 0
		for _, keys := range keysPerNode(t, rdb, prefix+"*") {
			for _, k := range keys {
				switch {
				case strings.HasPrefix(k, prefix+"session:r:"):
					records++
				case strings.HasPrefix(k, prefix+"issuer:{issuer}:"):
					issuerKeys++
				case strings.HasPrefix(k, prefix+"issuer:"):
					t.Errorf("issuer key %q lacks the {issuer} hash tag", k)
				}
			}
		}
		if records != 1 || issuerKeys == 0 {
			t.Fatalf("after one login the cluster holds %d session records and %d issuer keys under the gateway's prefix; want 1 and some", records, issuerKeys)
		}
		wantRefreshes(t, s, b, cookie)
		logout(t, s, b, cookie)
		wantQuietLogs(t, s)
	})
}
