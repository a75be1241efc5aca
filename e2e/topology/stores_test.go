package topology

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage"
	issuerredis "github.com/bffgate/bffgate/issuer/storage/redis"
	"github.com/bffgate/bffgate/issuer/storage/storagetest"
	"github.com/bffgate/bffgate/session"
	sessionredis "github.com/bffgate/bffgate/session/redis"
	"github.com/bffgate/bffgate/session/sessiontest"
)

// The helpers below run the same checks on a Cluster client and on a
// Sentinel (failover) client: both are goredis.UniversalClient, as in
// bffgate.

// runSessionSuite runs the session store's contract suite on rdb, each
// subtest on a prefix of its own.
func runSessionSuite(t *testing.T, rdb goredis.UniversalClient) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		return newSessionStore(t, rdb, randomPrefix("session"), now)
	})
}

func newSessionStore(t *testing.T, rdb goredis.UniversalClient, prefix string, now func() time.Time) *sessionredis.Store {
	t.Helper()
	st, err := sessionredis.New(rdb, sessionredis.Config{Prefix: prefix, Now: now})
	if err != nil {
		t.Fatalf("session/redis.New: %v", err)
	}
	return st
}

// runIssuerSuite runs the issuer storage's contract suite on rdb, each
// subtest on a prefix of its own.
func runIssuerSuite(t *testing.T, rdb goredis.UniversalClient) {
	storagetest.RunStoreTests(t, func(t *testing.T) storage.Store {
		return newIssuerStore(t, rdb, randomPrefix("issuer"))
	})
}

func newIssuerStore(t *testing.T, rdb goredis.UniversalClient, prefix string) *issuerredis.Store {
	t.Helper()
	st, err := issuerredis.New(rdb, issuerredis.Config{Prefix: prefix})
	if err != nil {
		t.Fatalf("issuer/storage/redis.New: %v", err)
	}
	return st
}

// testEnded checks the Ended records that the cookie session store keeps
// in Redis (session/redis.NewEnded): one lookup reads a sid record and a
// subject record, which on a Cluster are in different slots, in one
// pipeline.
func testEnded(t *testing.T, rdb goredis.UniversalClient) {
	ctx := t.Context()
	e := sessionredis.NewEnded(rdb, randomPrefix("ended"))
	now := time.Now()
	until := now.Add(time.Hour)
	if err := e.EndSID(ctx, "sid-ended", until); err != nil {
		t.Fatalf("EndSID: %v", err)
	}
	if err := e.EndSubject(ctx, "sub-ended", now, until); err != nil {
		t.Fatalf("EndSubject: %v", err)
	}
	for _, tc := range []struct {
		name     string
		sid, sub string
		created  time.Time
		want     bool
	}{
		{"ended sid", "sid-ended", "sub-live", now.Add(-time.Minute), true},
		{"ended subject, session created before", "sid-live", "sub-ended", now.Add(-time.Minute), true},
		{"ended subject, session created after", "sid-live", "sub-ended", now.Add(time.Minute), false},
		{"neither", "sid-live", "sub-live", now, false},
	} {
		got, err := e.Ended(ctx, tc.sid, tc.sub, tc.created)
		if err != nil || got != tc.want {
			t.Errorf("%s: Ended(%q, %q) = %v, %v; want %v", tc.name, tc.sid, tc.sub, got, err, tc.want)
		}
	}
}

// testDenylistPush: a denylist addition made by one issuer instance (its
// own client) reaches the subscriber of another instance by push. extra
// are further subscribers on the raw channel (every Cluster node), which
// must get it too.
func testDenylistPush(t *testing.T, a, b goredis.UniversalClient, extra ...*goredis.Client) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	prefix := randomPrefix("push")
	pub, sub := newIssuerStore(t, a, prefix), newIssuerStore(t, b, prefix)
	got := make(chan storage.DenyEntry, 8)
	if err := sub.Subscribe(ctx, func(e storage.DenyEntry) { got <- e }); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	// The channel is <prefix>{issuer}:denylist (issuer/storage/redis's
	// documented key layout).
	channel := prefix + "{issuer}:denylist"
	var raws []*goredis.PubSub
	for _, c := range extra {
		ps := c.Subscribe(ctx, channel)
		defer ps.Close()
		if _, err := ps.Receive(ctx); err != nil {
			t.Fatalf("SUBSCRIBE %s on %s: %v", channel, c.Options().Addr, err)
		}
		raws = append(raws, ps)
	}
	now := time.Now().Truncate(time.Millisecond).UTC()
	want := storage.DenyEntry{Kind: storage.DenyJTI, ID: "jti-pushed", Until: now.Add(time.Hour)}
	if err := pub.RevokeAccessToken(ctx, want.ID, "", want.Until, now); err != nil {
		t.Fatalf("RevokeAccessToken: %v", err)
	}
	select {
	case e := <-got:
		if e.Kind != want.Kind || e.ID != want.ID || !e.Until.Equal(want.Until) {
			t.Fatalf("pushed %+v, want %+v", e, want)
		}
	case <-time.After(readyWait):
		t.Fatalf("the subscribing instance got no push of the revocation within %s", readyWait)
	}
	for i, ps := range raws {
		select {
		case m := <-ps.Channel():
			if !strings.HasSuffix(m.Payload, " "+string(want.Kind)+" "+want.ID) {
				t.Errorf("subscriber on %s got %q, want the entry of %s", extra[i].Options().Addr, m.Payload, want.ID)
			}
		case <-time.After(readyWait):
			t.Errorf("the subscriber on node %s got no message within %s", extra[i].Options().Addr, readyWait)
		}
	}
	// The change log, which instances poll, has it too.
	entries, _, err := sub.DenylistChanges(ctx, 0, 0)
	if err != nil || len(entries) != 1 || entries[0].ID != want.ID {
		t.Fatalf("DenylistChanges = %+v, %v; want the one entry", entries, err)
	}
}

// issuerFlow makes the issuer store write a record of every kind: keys,
// a secret, a code redeemed into a grant with a refresh token and a sid,
// a rotation, a revoked access token (denylist, change log, sequence),
// a login session. It returns the rotated refresh token's jti.
func issuerFlow(t *testing.T, st *issuerredis.Store, tag string) string {
	t.Helper()
	ctx := t.Context()
	now := time.Now().Truncate(time.Millisecond).UTC()
	exp := now.Add(time.Hour)
	if err := st.UpdateKeys(ctx, func([]storage.Key) ([]storage.Key, error) {
		return []storage.Key{{ID: "kid-" + tag, Alg: "RS256", Private: []byte("not a real key"), Created: now}}, nil
	}); err != nil {
		t.Fatalf("UpdateKeys: %v", err)
	}
	if _, err := st.Secret(ctx, "cookie-"+tag, func() ([]byte, error) { return []byte("0123456789abcdef"), nil }); err != nil {
		t.Fatalf("Secret: %v", err)
	}
	code := storage.AuthCode{Hash: "code-" + tag, ClientID: "client", SID: "sid-" + tag, ExpiresAt: exp}
	if err := st.CreateCode(ctx, code); err != nil {
		t.Fatalf("CreateCode: %v", err)
	}
	grant := "grant-" + tag
	if _, err := st.RedeemCode(ctx, code.Hash, now, func(storage.AuthCode) (storage.Issued, error) {
		return storage.Issued{
			Grant:   &storage.Grant{ID: grant, ClientID: "client", SID: "sid-" + tag, ExpiresAt: exp},
			Refresh: &storage.RefreshToken{JTI: "rt0-" + tag, GrantID: grant, ExpiresAt: exp},
		}, nil
	}); err != nil {
		t.Fatalf("RedeemCode: %v", err)
	}
	next := "rt1-" + tag
	if err := st.RotateRefresh(ctx, "rt0-"+tag, true, now, func(old storage.RefreshToken) (storage.Issued, error) {
		r := old
		r.JTI = next
		return storage.Issued{Refresh: &r}, nil
	}); err != nil {
		t.Fatalf("RotateRefresh: %v", err)
	}
	if err := st.RevokeAccessToken(ctx, "at-"+tag, "", exp, now); err != nil {
		t.Fatalf("RevokeAccessToken: %v", err)
	}
	if err := st.CreateLoginSession(ctx, storage.LoginSession{ID: "login-" + tag, Subject: "user", ExpiresAt: exp}); err != nil {
		t.Fatalf("CreateLoginSession: %v", err)
	}
	return next
}

// --- the gateway: the real bffgate binary ---

// gatewayConfig is a bffgate configuration file with both stores on the
// Redis of redisSection, the test user, and the demo API behind the
// gateway. The listen addresses, public URL and data directory come from
// e2e/stack's BFFGATE_* variables.
func gatewayConfig(t *testing.T, redisSection string) string {
	t.Helper()
	hash, err := issuer.HashPassword(userPassword)
	if err != nil {
		t.Fatal(err)
	}
	// An access token lifetime under the gateway's refresh skew (30 s)
	// makes every API call through the gateway refresh first: the
	// refresh lock, the grace record and the issuer's rotation all run on
	// the topology.
	return fmt.Sprintf(`log: {level: warn, format: json, access: false}
%sissuer:
  store: redis
  tokens: {access_ttl: 10s}
  users:
  - username: %s
    password_hash: %q
    subject: %s
    claims: {name: Topology User, email: topology@example.com, email_verified: true}
gateway:
  session: {store: redis}
demo_api: {enabled: true}
`, redisSection, userName, hash, userSubject)
}

// startGateway runs bffgate with both stores on the Redis of
// redisSection; it is stopped with the test.
func startGateway(t *testing.T, redisSection string) *stack.Stack {
	t.Helper()
	return stack.Start(t, stack.Options{ConfigYAML: gatewayConfig(t, redisSection)})
}

// checkSession wants the session of cookie served: /bff/user with the
// user's sub, the demo API through the gateway with the user's subject,
// and both listeners ready.
func checkSession(t *testing.T, s *stack.Stack, b *issuerclient.Browser, cookie string) {
	t.Helper()
	ctx := t.Context()
	a, err := b.Get(ctx, s.GatewayURL+"/bff/user", cookie)
	if err != nil || a.Status != http.StatusOK || userSub(a.Body) != userSubject {
		t.Fatalf("GET /bff/user: %v %s; want 200 with sub %q", err, a, userSubject)
	}
	a, err = b.Get(ctx, s.GatewayURL+"/api/whoami", cookie)
	if err != nil || a.Status != http.StatusOK || whoamiSubject(a.Body) != userSubject {
		t.Fatalf("GET /api/whoami through the gateway: %v %s; want 200 with subject %q", err, a, userSubject)
	}
	for _, u := range []string{s.GatewayURL + "/readyz", s.IssuerURL + "/readyz"} {
		a, err := b.Get(ctx, u, "")
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		if a.Status != http.StatusOK {
			t.Fatalf("GET %s: %s; want 200", u, a)
		}
	}
}

// wantRefreshes calls the API through the gateway twice more and wants
// the gateway's refresh counter (its /metrics) to have grown by at least
// as much, with no refresh failed: the refresh lock and grace records
// (bff/tokens/redistokens) and the issuer's refresh rotation work on the
// topology.
func wantRefreshes(t *testing.T, s *stack.Stack, b *issuerclient.Browser, cookie string) {
	t.Helper()
	before := refreshCounts(t, s)
	for range 2 {
		a, err := b.Get(t.Context(), s.GatewayURL+"/api/whoami", cookie)
		if err != nil || a.Status != http.StatusOK {
			t.Fatalf("GET /api/whoami through the gateway: %v %s; want 200", err, a)
		}
	}
	after := refreshCounts(t, s)
	if got := after["refreshed"] - before["refreshed"]; got < 2 {
		t.Errorf("two API calls with an access token inside the refresh skew made %v refreshes, want 2 (counters before %v, after %v)", got, before, after)
	}
	for result, n := range after {
		if result != "refreshed" && n > 0 {
			t.Errorf("bffgate_token_refresh_total{result=%q} = %v, want 0 (all counters: %v)", result, n, after)
		}
	}
}

// refreshCounts reads bffgate_token_refresh_total by result from the
// gateway's /metrics.
func refreshCounts(t *testing.T, s *stack.Stack) map[string]float64 {
	t.Helper()
	resp, err := testhttp.Client.Get(s.GatewayURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d, %v", resp.StatusCode, err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `bffgate_token_refresh_total{result="`)
		if !ok {
			continue
		}
		result, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[result] = n
	}
	return out
}

// login signs the user in through the gateway and checks the session.
func login(t *testing.T, s *stack.Stack) (*issuerclient.Browser, string) {
	t.Helper()
	b := issuerclient.NewBrowser(t)
	cookie, err := b.GatewayLogin(t.Context(), s.GatewayURL, userName, userPassword)
	if err != nil {
		t.Fatal(err)
	}
	checkSession(t, s, b, cookie)
	return b, cookie
}

// wantQuietLogs fails the test on WARN or ERROR lines in the process's
// log: on a healthy topology nothing may go wrong quietly (a failed index
// cleanup, for one, is only logged).
func wantQuietLogs(t *testing.T, s *stack.Stack) {
	t.Helper()
	for _, level := range []string{`"level":"WARN"`, `"level":"ERROR"`} {
		for _, line := range s.LogLines(level) {
			t.Errorf("bffgate logged: %s", clip(line, 500))
		}
	}
}

// logout ends the session through the gateway and wants it gone.
func logout(t *testing.T, s *stack.Stack, b *issuerclient.Browser, cookie string) {
	t.Helper()
	ctx := t.Context()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.GatewayURL+"/bff/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := b.Do(req, cookie)
	if err != nil || a.Status/100 != 3 {
		t.Fatalf("POST /bff/logout: %v %s; want a redirect", err, a)
	}
	a, err = b.Get(ctx, s.GatewayURL+"/bff/user", cookie)
	if err != nil || a.Status != http.StatusUnauthorized {
		t.Fatalf("GET /bff/user after logout: %v %s; want 401", err, a)
	}
}

// keysPerNode lists the keys matching pattern on each master of a
// Cluster, by the master's address (SCAN runs per node: a Cluster client's
// own SCAN sees one node only).
func keysPerNode(t *testing.T, rdb *goredis.ClusterClient, pattern string) map[string][]string {
	t.Helper()
	var mu sync.Mutex
	out := map[string][]string{}
	err := rdb.ForEachMaster(t.Context(), func(ctx context.Context, node *goredis.Client) error {
		var keys []string
		iter := node.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		out[node.Options().Addr] = keys
		return nil
	})
	if err != nil {
		t.Fatalf("SCAN %s on every master: %v", pattern, err)
	}
	return out
}
