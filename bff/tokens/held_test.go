package tokens

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// A store that cannot write (a full disk) while the provider rotates: the
// rotated refresh token is never lost. The refresh's tokens are served
// and held in memory; past the grace window, and past their own expiry
// (a second rotation from the held refresh token), the session keeps
// working without ever presenting a rotated-away token to the provider
// (which would revoke the grant); once the store writes again, the held
// tokens are saved.
func TestStoreCannotWriteHoldsRotatedTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	ctx := context.Background()
	h, s := f.login(t, 10*time.Second) // due: within the 30 s skew
	first := s.RefreshToken
	f.store.failWrites.Store(true)

	got, gh, err := f.m.Fresh(ctx, f.store, h, s, false)
	if err != nil {
		t.Fatalf("refresh with a store that cannot write: %v; want the new tokens served", err)
	}
	if got.AccessToken == s.AccessToken || got.RefreshToken == first || gh != h {
		t.Fatalf("refresh served access %q refresh %q handle changed %t; want the rotated tokens, same handle", got.AccessToken, got.RefreshToken, gh != h)
	}
	if f.count(t, "held") != 1 {
		t.Errorf("held refreshes counted %v, want 1", f.count(t, "held"))
	}
	if g := heldGauge(t, f); g != 1 {
		t.Errorf("bffgate_token_refresh_held_sessions = %v, want 1", g)
	}

	// Past the grace window: the grace record is gone, the store still
	// holds the rotated-away token, and the held tokens are what a
	// request gets.
	f.clk.Add(2 * time.Minute)
	stale, err := f.store.Get(ctx, h)
	if err != nil || stale.RefreshToken != first {
		t.Fatalf("store: %+v %v; want it still behind (the first refresh token)", stale, err)
	}
	again, _, err := f.m.Fresh(ctx, f.store, h, stale, false)
	if err != nil || again.AccessToken != got.AccessToken {
		t.Fatalf("request past the grace window: %v, access %q; want the held %q", err, again.AccessToken, got.AccessToken)
	}
	if n := f.prov.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes at the provider, want 1 (the held tokens are fresh)", n)
	}

	// The held access token expires: it is refreshed from the held refresh
	// token, never from the store's.
	f.clk.Add(5 * time.Minute)
	third, _, err := f.m.Fresh(ctx, f.store, h, stale, false)
	if err != nil || third.AccessToken == got.AccessToken || third.RefreshToken == got.RefreshToken {
		t.Fatalf("held tokens due: %v, access %q refresh %q; want a second rotation", err, third.AccessToken, third.RefreshToken)
	}
	f.prov.mu.Lock()
	revoked := len(f.prov.revoked)
	f.prov.mu.Unlock()
	if revoked != 0 || !f.prov.isLive(third.RefreshToken) {
		t.Fatalf("provider: %d grants revoked, latest refresh token live %t; want no reuse, the latest live", revoked, f.prov.isLive(third.RefreshToken))
	}

	// The store writes again: the next request saves the held tokens.
	f.store.failWrites.Store(false)
	if _, _, err := f.m.Fresh(ctx, f.store, h, stale, false); err != nil {
		t.Fatal(err)
	}
	saved, err := f.store.Get(ctx, h)
	if err != nil || saved.RefreshToken != third.RefreshToken || saved.AccessToken != third.AccessToken {
		t.Fatalf("store after recovery: %+v %v; want the held tokens saved", saved, err)
	}
	if f.m.held.any() || heldGauge(t, f) != 0 {
		t.Errorf("tokens still held after they were saved (gauge %v)", heldGauge(t, f))
	}
	if n := f.prov.refreshes.Load(); n != 2 {
		t.Errorf("%d refreshes at the provider, want 2", n)
	}
}

// Without a rotation nothing needs holding: the refresh's save failure is
// the store's outage (session.ErrUnavailable: 503, session kept), and the
// old refresh token still works.
func TestStoreCannotWriteNoRotation(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	f.prov.noRotate = true
	h, s := f.login(t, 10*time.Second)
	f.store.failWrites.Store(true)
	_, _, err := f.m.Fresh(context.Background(), f.store, h, s, false)
	if !errors.Is(err, session.ErrUnavailable) {
		t.Fatalf("refresh without rotation, store cannot write: %v; want session.ErrUnavailable", err)
	}
	if f.m.held.any() {
		t.Error("tokens held though the store's refresh token is still live")
	}
}

func heldGauge(t *testing.T, f *fixture) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "bffgate_token_refresh_held_sessions" {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("bffgate_token_refresh_held_sessions is not registered")
	return 0
}
