package topology

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// TestSentinel runs bffgate's Redis stores and the bffgate binary on a
// master and a replica monitored by Redis Sentinel, then fails over to
// the replica and checks that both keep working with what they stored.
func TestSentinel(t *testing.T) {
	t.Parallel()
	sn := startSentinel(t)
	rdb := sn.client(t)

	t.Run("SessionStore", func(t *testing.T) { runSessionSuite(t, rdb) })
	t.Run("SessionStoreCached", func(t *testing.T) { runCachedSessionSuite(t, rdb) })
	t.Run("NearCache", func(t *testing.T) { testNearCache(t, rdb, sn.client(t)) })
	t.Run("IssuerStore", func(t *testing.T) { runIssuerSuite(t, rdb) })
	t.Run("EndedRecords", func(t *testing.T) { testEnded(t, rdb) })
	t.Run("DenylistPush", func(t *testing.T) { testDenylistPush(t, rdb, sn.client(t)) })

	// One bffgate process for both subtests below: it lives across the
	// failover, as a deployed one does.
	gwPrefix := randomPrefix("gateway")
	gw := startGateway(t, sn.yaml(gwPrefix))

	// The bffgate binary with redis.sentinel_addrs, redis.master_name,
	// redis.sentinel_password (the sentinel refuses clients without it)
	// and both stores on redis: login, /bff/user, the API through the
	// gateway (refreshing the access token each time), /readyz, and
	// logout; the session is on the master.
	t.Run("Gateway", func(t *testing.T) {
		b, cookie := login(t, gw)
		keys, err := sn.master.client(t).Keys(t.Context(), gwPrefix+"session:r:*").Result()
		if err != nil || len(keys) != 1 {
			t.Fatalf("after one login the master holds %d session records under the gateway's prefix (%v); want 1", len(keys), err)
		}
		wantRefreshes(t, gw, b, cookie)
		logout(t, gw, b, cookie)
		wantQuietLogs(t, gw)
	})

	// SENTINEL FAILOVER promotes the replica. What the stores and the
	// gateway wrote before is there afterwards (it was replicated before
	// the failover: WAIT), the clients move to the new master, and the
	// contract suites pass again on the same clients.
	t.Run("Failover", func(t *testing.T) {
		ctx := t.Context()
		sc := sn.sentinelClient(t)
		now := time.Now()
		sst := newSessionStore(t, rdb, randomPrefix("failover"), nil)
		handles := make([]string, 20)
		for i := range handles {
			h, err := sst.Create(ctx, sessiontest.Sample(now, i))
			if err != nil {
				t.Fatalf("Create %d: %v", i, err)
			}
			handles[i] = h
		}
		ist := newIssuerStore(t, rdb, randomPrefix("failover"))
		rt := issuerFlow(t, ist, "before")
		b, cookie := login(t, gw)
		sn.waitReplicated(t, sn.master)

		// Another issuer instance subscribed to the denylist before the
		// failover.
		pushPrefix := randomPrefix("failover-push")
		pushed := make(chan storage.DenyEntry, 64)
		if err := newIssuerStore(t, sn.client(t), pushPrefix).Subscribe(ctx, func(e storage.DenyEntry) { pushed <- e }); err != nil {
			t.Fatalf("Subscribe: %v", err)
		}

		newMaster := sn.failover(t, sc)

		// The test's client follows the sentinel's +switch-master: its
		// writes land on the new master. Until then the old master, now a
		// replica, refuses them (READONLY).
		nm := newMaster.client(t)
		probe := 0
		waitFor(t, "writes through the Sentinel client land on the new master", func() (bool, error) {
			probe++
			v := strconv.Itoa(probe)
			if err := rdb.Set(ctx, "topology:failover-probe", v, 0).Err(); err != nil {
				return false, err
			}
			got, err := nm.Get(ctx, "topology:failover-probe").Result()
			return got == v, fmt.Errorf("the new master holds %q (%v), want %q", got, err, v)
		})

		// The gateway's client moves the same way: the session made before
		// the failover is served, and sliding it (a write) succeeds.
		waitFor(t, "the gateway serves the session made before the failover", func() (bool, error) {
			a, err := b.Get(ctx, gw.GatewayURL+"/bff/user", cookie)
			return err == nil && a.Status == http.StatusOK, fmt.Errorf("GET /bff/user: %v %s", err, a)
		})
		checkSession(t, gw, b, cookie)
		b2, cookie2 := login(t, gw)
		logout(t, gw, b2, cookie2)
		logout(t, gw, b, cookie)

		for i, h := range handles {
			if _, err := sst.Get(ctx, h); err != nil {
				t.Fatalf("Get of session %d made before the failover: %v", i, err)
			}
			if _, err := sst.Update(ctx, h, func(s *session.Session) error { s.LastSeen = time.Now(); return nil }); err != nil {
				t.Fatalf("Update of session %d made before the failover: %v", i, err)
			}
		}
		if n, err := sst.EndBySID(ctx, "sid-0"); err != nil || n != 1 {
			t.Fatalf("EndBySID of a session made before the failover = %d, %v; want 1", n, err)
		}
		if _, err := sst.Get(ctx, handles[0]); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get of an ended session = %v, want ErrNotFound", err)
		}
		// The refresh token allowlisted before the failover rotates once.
		rotate := func(storage.RefreshToken) (storage.Issued, error) {
			return storage.Issued{Refresh: &storage.RefreshToken{JTI: "rt2-after", GrantID: "grant-before", ExpiresAt: now.Add(time.Hour)}}, nil
		}
		if err := ist.RotateRefresh(ctx, rt, true, time.Now(), rotate); err != nil {
			t.Fatalf("RotateRefresh of a refresh token stored before the failover: %v", err)
		}
		if err := ist.RotateRefresh(ctx, rt, true, time.Now(), rotate); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("second RotateRefresh of the same token = %v, want ErrNotFound", err)
		}
		if denied, err := ist.Denied(ctx, storage.DenyJTI, "at-before"); err != nil || !denied {
			t.Fatalf("Denied(access token revoked before the failover) = %v, %v; want true", denied, err)
		}
		issuerFlow(t, ist, "after")

		// The subscription made before the failover still gets pushes. Its
		// connection stays on the old master, which as a replica receives
		// the new master's PUBLISH through replication (or, if the server
		// drops it, go-redis resubscribes through the sentinel). A push
		// sent while it reconnects is lost by design (the change-log poll
		// catches it), so revocations are sent until one arrives.
		pub := newIssuerStore(t, rdb, pushPrefix)
		sent := 0
		waitFor(t, "a revocation after the failover is pushed to the subscriber made before it", func() (bool, error) {
			select {
			case e := <-pushed:
				return strings.HasPrefix(e.ID, "jti-after-failover-"), fmt.Errorf("pushed %+v", e)
			default:
			}
			sent++
			now := time.Now()
			return false, pub.RevokeAccessToken(ctx, "jti-after-failover-"+strconv.Itoa(sent), "", now.Add(time.Hour), now)
		})

		t.Run("SessionStore", func(t *testing.T) { runSessionSuite(t, rdb) })
		t.Run("NearCache", func(t *testing.T) { testNearCache(t, rdb, sn.client(t)) })
		t.Run("IssuerStore", func(t *testing.T) { runIssuerSuite(t, rdb) })
		t.Run("DenylistPush", func(t *testing.T) { testDenylistPush(t, rdb, sn.client(t)) })
	})

	// Through startup, the requests and the failover (go-redis logs its
	// reconnections), bffgate never printed the sentinel password.
	if strings.Contains(gw.Logs(), sn.sentinel.password) {
		t.Errorf("bffgate's output shows the sentinel password")
	}
}
