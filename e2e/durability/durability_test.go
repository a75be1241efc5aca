package durability

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/stack"
)

// testClient is the confidential client the tests register at the issuer
// (they sign in as the zero-config demo user).
var testClient = issuerclient.Config{
	ClientID:     "e2e-durability",
	ClientSecret: "e2e-durability-secret-0123456789abcdef",
	RedirectURI:  "https://client.e2e.test/callback",
}

// issuerEnv runs the issuer (and the demo API) alone, with the test
// client, without access log lines (thousands of requests).
func issuerEnv(extra ...string) stack.Options {
	return stack.Options{NoGateway: true, Env: append([]string{testClient.Env(), "BFFGATE_LOG_ACCESS=false"}, extra...)}
}

// op is what a load worker last sent for a grant.
type op int

const (
	opNone op = iota
	opRefresh
	opRevokeAccess
	opRevokeRefresh
)

func (o op) String() string {
	return [...]string{"none", "refresh", "revoke access token", "revoke refresh token"}[o]
}

// plan is what a load worker does with a grant.
type plan int

const (
	planRefresh       plan = iota // refresh until the kill
	planRevokeAccess              // refresh a few times, then revoke the last access token
	planRevokeRefresh             // refresh a few times, then revoke the refresh token
)

// tracked is one grant as the test client saw it: only answers it got
// count as acknowledged.
type tracked struct {
	plan    plan
	after   int      // refreshes before the plan's revocation
	access  []string // every access token received
	refresh []string // every refresh token received; the last is current
	// revokedAccess is the access token whose revocation was answered 200.
	revokedAccess string
	// revokedRefresh: the revocation of the current refresh token was
	// answered 200.
	revokedRefresh bool
	// inflight is the request sent without an answer when the process
	// died: its effect may or may not have been committed.
	inflight op
	done     bool
}

func (g *tracked) current() string { return g.refresh[len(g.refresh)-1] }

// clean reports whether the grant's state is known exactly: nothing was
// in flight for it at the kill.
func (g *tracked) clean() bool { return g.inflight == opNone }

// step sends the grant's next request. It returns a transport error (the
// process is gone) and records any other surprise on t.
func (g *tracked) step(ctx context.Context, t *testing.T, c *issuerclient.Client) error {
	var next op
	switch {
	case g.plan == planRevokeAccess && len(g.refresh) > g.after:
		next = opRevokeAccess
	case g.plan == planRevokeRefresh && len(g.refresh) > g.after:
		next = opRevokeRefresh
	default:
		next = opRefresh
	}
	g.inflight = next
	switch next {
	case opRefresh:
		tk, r, err := c.Refresh(ctx, g.current())
		if err != nil && r.Status == 0 {
			return err
		}
		if err != nil || r.Status != http.StatusOK {
			t.Errorf("refresh of a live refresh token under load: %s (%v), want 200", r, err)
			g.done = true
			break
		}
		g.access = append(g.access, tk.AccessToken)
		g.refresh = append(g.refresh, tk.RefreshToken)
	case opRevokeAccess:
		at := g.access[len(g.access)-1]
		r, err := c.Revoke(ctx, at, "access_token")
		if err != nil && r.Status == 0 {
			return err
		}
		if err != nil || r.Status != http.StatusOK {
			t.Errorf("revoke access token under load: %s (%v), want 200", r, err)
		}
		g.revokedAccess, g.done = at, true
	case opRevokeRefresh:
		r, err := c.Revoke(ctx, g.current(), "refresh_token")
		if err != nil && r.Status == 0 {
			return err
		}
		if err != nil || r.Status != http.StatusOK {
			t.Errorf("revoke refresh token under load: %s (%v), want 200", r, err)
		}
		g.revokedRefresh, g.done = true, true
	}
	g.inflight = opNone
	return nil
}

// TestKillDuringLoad kills the issuer with SIGKILL while refreshes and
// revocations are in flight, restarts it on the same data directory, and
// checks that the bbolt file holds exactly what was acknowledged: every
// answered revocation holds, every answered rotation left the new refresh
// token live and the old one refused, nothing answers 500, and the keys
// survived (tokens minted before the kill still introspect active).
func TestKillDuringLoad(t *testing.T) {
	s := stack.Start(t, issuerEnv())
	c := issuerclient.New(t, s.IssuerURL, testClient)
	c.MustGrant() // signs in once; the SSO session mints the rest

	const (
		workers   = 6
		perWorker = 8
		churners  = 2
		minAcked  = 400
	)
	grants := make([]*tracked, workers*perWorker)
	for i := range grants {
		tk := c.MustGrant()
		grants[i] = &tracked{plan: plan(i % 3), after: 1 + i%5, access: []string{tk.AccessToken}, refresh: []string{tk.RefreshToken}}
	}

	var (
		acked    atomic.Int64
		killed   atomic.Bool
		stop     = make(chan struct{})
		enough   = make(chan struct{})
		onceDone sync.Once
		wg       sync.WaitGroup
		churnMu  sync.Mutex
		churned  []*tracked // grants minted, then revoked, during the load
	)
	count := func() {
		if acked.Add(1) == minAcked {
			onceDone.Do(func() { close(enough) })
		}
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	ctx := context.Background()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := grants[w*perWorker : (w+1)*perWorker]
			for !stopped() {
				live := 0
				for _, g := range mine {
					if g.done || stopped() {
						continue
					}
					live++
					if err := g.step(ctx, t, c); err != nil {
						// The process is gone; g.inflight says what was
						// in flight.
						if !killed.Load() {
							t.Errorf("transport error before the kill: %v", err)
						}
						return
					}
					count()
				}
				if live == 0 {
					return
				}
			}
		}()
	}
	// Churners mint grants and revoke them (access token, then refresh
	// token) for as long as the load runs, so that revocations are in
	// flight at the kill too.
	for range churners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stopped() {
				tk, err := c.Grant(ctx)
				if err != nil {
					if !killed.Load() {
						t.Errorf("mint a grant under load: %v", err)
					}
					return
				}
				count()
				g := &tracked{plan: planRevokeAccess, access: []string{tk.AccessToken}, refresh: []string{tk.RefreshToken}}
				churnMu.Lock()
				churned = append(churned, g)
				churnMu.Unlock()
				if err := g.step(ctx, t, c); err != nil {
					if !killed.Load() {
						t.Errorf("transport error before the kill: %v", err)
					}
					return
				}
				count()
			}
		}()
	}

	select {
	case <-enough:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the load did not reach %d answered requests in 2 minutes (got %d)", minAcked, acked.Load())
	}
	killed.Store(true)
	s.Kill()
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Restart on the same data directory: the bbolt file must open.
	s.Restart()
	c = issuerclient.New(t, s.IssuerURL, testClient) // fresh connections to the new process
	all := append(grants, churned...)
	var inflight, rotations, revocations int
	for _, g := range all {
		if !g.clean() {
			inflight++
		}
		rotations += len(g.refresh) - 1
		if g.revokedAccess != "" || g.revokedRefresh {
			revocations++
		}
	}
	t.Logf("%d answered requests before the kill: %d grants, %d rotations, %d revocations answered, %d requests in flight",
		acked.Load(), len(all), rotations, revocations, inflight)

	for i, g := range all {
		name := fmt.Sprintf("grant %d (plan %d, in flight %s)", i, g.plan, g.inflight)
		checkAfterRestart(ctx, t, c, name, g)
	}
	for _, line := range s.LogLines("panic") {
		t.Errorf("log line after restart: %s", line)
	}
}

// checkAfterRestart checks one grant against what was acknowledged before
// the kill, by introspection first (which changes nothing), then by
// refreshing (a refused rotated-away token revokes the grant, so that
// comes last).
func checkAfterRestart(ctx context.Context, t *testing.T, c *issuerclient.Client, name string, g *tracked) {
	t.Helper()
	revokedGrant := g.revokedRefresh // RFC 7009 + lifecycle §5: the grant's access tokens go with it
	for _, at := range g.access {
		active := c.Introspect(ctx, at, "access_token")
		switch {
		case at == g.revokedAccess || revokedGrant:
			if active {
				t.Errorf("%s: an access token whose revocation was acknowledged before the kill is active after the restart", name)
			}
		case g.inflight == opRevokeRefresh || g.inflight == opRevokeAccess:
			// Either outcome is correct for a revocation in flight.
		case !active:
			t.Errorf("%s: a live access token minted before the kill is inactive after the restart (keys or denylist changed)", name)
		}
	}
	for _, old := range g.refresh[:len(g.refresh)-1] {
		if c.Introspect(ctx, old, "refresh_token") {
			t.Errorf("%s: a refresh token rotated away (rotation acknowledged) is active again after the restart", name)
		}
	}
	cur := g.current()
	curActive := c.Introspect(ctx, cur, "refresh_token")
	revoked := g.revokedAccess != "" || g.revokedRefresh // §5: both remove the grant's refresh tokens
	switch {
	case revoked && curActive:
		t.Errorf("%s: the refresh token of a grant whose revocation was acknowledged is active after the restart", name)
	case !revoked && g.clean() && !curActive:
		t.Errorf("%s: the current refresh token (its issuance acknowledged, nothing in flight) is inactive after the restart: allowlist record lost", name)
	}

	// Now use it: never a 500, a half-written record shows as one.
	tk, r, err := c.Refresh(ctx, cur)
	if err != nil && r.Status == 0 {
		t.Fatalf("%s: refresh after restart: %v", name, err)
	}
	switch {
	case err != nil:
		t.Errorf("%s: refresh after restart: %v", name, err)
		return
	case r.Status == http.StatusOK:
		if revoked || !curActive {
			t.Errorf("%s: refresh after restart succeeded with a refresh token that is revoked or was inactive", name)
		}
		if !c.Introspect(ctx, tk.RefreshToken, "refresh_token") || !c.Introspect(ctx, tk.AccessToken, "access_token") {
			t.Errorf("%s: the tokens of a refresh after the restart are not active", name)
		}
	case r.Status == http.StatusBadRequest && r.Code == "invalid_grant":
		if curActive {
			t.Errorf("%s: refresh after restart refused (%s) a refresh token introspection reported active", name, r)
		}
		return
	default:
		t.Errorf("%s: refresh after restart: %s, want 200 or 400 invalid_grant", name, r)
		return
	}
	// The rotated-away tokens are refused cleanly (and, being reused,
	// revoke the grant: RFC 9700 §4.14.2).
	if len(g.refresh) > 1 {
		_, r, err := c.Refresh(ctx, g.refresh[len(g.refresh)-2])
		if err != nil || r.Status != http.StatusBadRequest || r.Code != "invalid_grant" {
			t.Errorf("%s: refresh with a token rotated away before the kill: %s (%v), want 400 invalid_grant", name, r, err)
		}
		if c.Introspect(ctx, tk.RefreshToken, "refresh_token") {
			t.Errorf("%s: reuse of a rotated-away refresh token did not revoke its grant", name)
		}
	}
}

// TestRestartKeepsKeys stops the issuer gracefully and starts it again on
// the same data directory: the signing keys are the ones it had, so a
// token minted before verifies (its kid is in the JWKS) and introspects
// active, and its refresh token still works.
func TestRestartKeepsKeys(t *testing.T) {
	s := stack.Start(t, issuerEnv())
	c := issuerclient.New(t, s.IssuerURL, testClient)
	tk := c.MustGrant()
	kid := tokenKID(t, tk.AccessToken)
	if !hasKID(t, c, kid) {
		t.Fatalf("the access token's kid %q is not in the JWKS before the restart", kid)
	}

	s.Restart()
	c = issuerclient.New(t, s.IssuerURL, testClient)
	ctx := context.Background()
	if !hasKID(t, c, kid) {
		t.Errorf("the access token's kid %q is not in the JWKS after the restart: the keys were not kept", kid)
	}
	if !c.Introspect(ctx, tk.AccessToken, "access_token") {
		t.Errorf("an access token minted before the restart is inactive after it")
	}
	next, r, err := c.Refresh(ctx, tk.RefreshToken)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("refresh with a refresh token minted before the restart: %s (%v), want 200", r, err)
	}
	if got := tokenKID(t, next.AccessToken); got != kid {
		t.Errorf("the access token minted after the restart has kid %q, want the same active key %q", got, kid)
	}
}

// tokenKID returns the kid of a JWS compact token's protected header.
func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	head, _, ok := strings.Cut(tok, ".")
	if !ok {
		t.Fatalf("the access token is not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		t.Fatalf("the access token's header: %v", err)
	}
	var h struct {
		KID string `json:"kid"`
	}
	if err := json.Unmarshal(b, &h); err != nil || h.KID == "" {
		t.Fatalf("the access token's header has no kid: %s", b)
	}
	return h.KID
}

func hasKID(t *testing.T, c *issuerclient.Client, kid string) bool {
	t.Helper()
	resp, body, err := c.Get(context.Background(), c.IssuerURL()+"/jwks")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /jwks: %v %v", err, resp)
	}
	var set struct {
		Keys []struct {
			KID string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal([]byte(body), &set); err != nil {
		t.Fatalf("GET /jwks: %v", err)
	}
	for _, k := range set.Keys {
		if k.KID == kid {
			return true
		}
	}
	return false
}

// TestRefreshRace presents one refresh token twice at once over real
// HTTP, for several grants: exactly one refresh wins, the other gets
// invalid_grant, and that reuse revokes the grant (RFC 9700 §4.14.2), so
// the winner's new tokens are inactive too.
func TestRefreshRace(t *testing.T) {
	s := stack.Start(t, issuerEnv())
	c := issuerclient.New(t, s.IssuerURL, testClient)
	ctx := context.Background()
	for round := range 10 {
		tk := c.MustGrant()
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			results [2]struct {
				tk  issuerclient.Tokens
				r   issuerclient.Reply
				err error
			}
		)
		for i := range results {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				results[i].tk, results[i].r, results[i].err = c.Refresh(ctx, tk.RefreshToken)
			}()
		}
		close(start)
		wg.Wait()
		var won, lost int
		var winner issuerclient.Tokens
		for _, res := range results {
			switch {
			case res.err != nil:
				t.Errorf("round %d: refresh: %v", round, res.err)
			case res.r.Status == http.StatusOK:
				won++
				winner = res.tk
			case res.r.Status == http.StatusBadRequest && res.r.Code == "invalid_grant":
				lost++
			default:
				t.Errorf("round %d: refresh: %s, want 200 or 400 invalid_grant", round, res.r)
			}
		}
		if won != 1 || lost != 1 {
			t.Fatalf("round %d: two racing refreshes of one token: %d won, %d got invalid_grant; want exactly one of each", round, won, lost)
		}
		if c.Introspect(ctx, winner.RefreshToken, "refresh_token") {
			t.Errorf("round %d: the losing refresh (a reuse) did not revoke the grant: the winner's refresh token is active", round)
		}
		if c.Introspect(ctx, winner.AccessToken, "access_token") {
			t.Errorf("round %d: the losing refresh (a reuse) did not denylist the grant's access tokens", round)
		}
	}
}
