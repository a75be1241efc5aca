package tokens

import (
	"context"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// TestSaveKeepsNewerTokens: while this Manager's refresh is at the
// provider, another writer (an instance whose lock did not exclude this
// one) refreshes the session. save compares inside store.Update and does
// not overwrite what the other wrote, except where the other's refresh
// token may be dead; the caller gets the session as stored.
func TestSaveKeepsNewerTokens(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		noRotate  bool                   // the provider answers this refresh without a new refresh token
		other     func(*session.Session) // what the other writer saves meanwhile
		wantOther bool                   // the other's tokens stay
	}{
		{"other rotated", false, func(s *session.Session) { s.AccessToken, s.RefreshToken = "at-other", "rt-other" }, true},
		{"neither rotated", true, func(s *session.Session) { s.AccessToken = "at-other" }, true},
		// The other kept the old refresh token, which this refresh has
		// just used at a rotating provider: only ours is sure to work.
		{"only this refresh rotated", false, func(s *session.Session) { s.AccessToken = "at-other" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, false, nil)
			f.prov.noRotate = tc.noRotate
			f.prov.delay = make(chan struct{})
			h, s := f.login(t, -time.Minute)
			ctx := context.Background()

			type out struct {
				s   *session.Session
				h   string
				err error
			}
			done := make(chan out, 1)
			go func() {
				got, gh, err := f.m.Fresh(ctx, f.store, h, s, false)
				done <- out{got, gh, err}
			}()
			<-f.prov.arrived
			otherExp := f.clk.Now().Add(time.Hour)
			if _, err := f.store.Update(ctx, h, func(c *session.Session) error {
				tc.other(c)
				c.AccessExpiry = otherExp
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			other, _ := f.store.Get(ctx, h)
			close(f.prov.delay)
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			stored, err := f.store.Get(ctx, r.h)
			if err != nil {
				t.Fatal(err)
			}
			if stored.AccessToken != r.s.AccessToken || stored.RefreshToken != r.s.RefreshToken {
				t.Fatalf("caller got %q/%q, the store holds %q/%q", r.s.AccessToken, r.s.RefreshToken, stored.AccessToken, stored.RefreshToken)
			}
			if tc.wantOther {
				if stored.AccessToken != other.AccessToken || stored.RefreshToken != other.RefreshToken || !stored.AccessExpiry.Equal(otherExp) {
					t.Fatalf("the store holds %q/%q, want the other writer's %q/%q", stored.AccessToken, stored.RefreshToken, other.AccessToken, other.RefreshToken)
				}
				if f.count(t, "concurrent") != 1 || f.count(t, "refreshed") != 0 {
					t.Errorf("concurrent = %v (want 1), refreshed = %v (want 0)", f.count(t, "concurrent"), f.count(t, "refreshed"))
				}
				// The next request uses the stored tokens; no second call.
				if _, _, err := f.m.Fresh(ctx, f.store, r.h, r.s, false); err != nil || f.prov.refreshes.Load() != 1 {
					t.Errorf("next request: %v, %d refreshes at the provider (want 1)", err, f.prov.refreshes.Load())
				}
				return
			}
			if stored.AccessToken == other.AccessToken || !f.prov.isLive(stored.RefreshToken) || stored.RefreshToken == s.RefreshToken {
				t.Fatalf("the store holds %q/%q (live %v); want this refresh's rotated tokens", stored.AccessToken, stored.RefreshToken, f.prov.isLive(stored.RefreshToken))
			}
			if f.count(t, "refreshed") != 1 || f.count(t, "concurrent") != 0 {
				t.Errorf("refreshed = %v (want 1), concurrent = %v (want 0)", f.count(t, "refreshed"), f.count(t, "concurrent"))
			}
		})
	}
}

// TestStaleGraceRecord: a request that read the session two rotations ago
// finds the grace record of the first rotation; it must not write that
// record's (now rotated-away) refresh token over the session's live one.
func TestStaleGraceRecord(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	h, s0 := f.login(t, -time.Minute)
	ctx := context.Background()
	s1, _, err := f.m.Fresh(ctx, f.store, h, s0, false)
	if err != nil {
		t.Fatal(err)
	}
	s2, _, err := f.m.Fresh(ctx, f.store, h, s1, true)
	if err != nil || s2.RefreshToken == s1.RefreshToken {
		t.Fatalf("second rotation: %v", err)
	}
	late, lh, err := f.m.Fresh(ctx, f.store, h, s0, false)
	if err != nil {
		t.Fatal(err)
	}
	stored, _ := f.store.Get(ctx, h)
	if late.RefreshToken != s2.RefreshToken || stored.RefreshToken != s2.RefreshToken || lh != h {
		t.Fatalf("late request got %q, the store holds %q; want the live %q", late.RefreshToken, stored.RefreshToken, s2.RefreshToken)
	}
	if !f.prov.isLive(stored.RefreshToken) || f.prov.refreshes.Load() != 2 {
		t.Errorf("live %v, %d refreshes at the provider (want 2)", f.prov.isLive(stored.RefreshToken), f.prov.refreshes.Load())
	}
	if f.count(t, "concurrent") != 1 || f.count(t, "grace") != 0 {
		t.Errorf("concurrent = %v (want 1), grace = %v (want 0)", f.count(t, "concurrent"), f.count(t, "grace"))
	}
}

// TestMemoryLockerFenced: the in-process lock cannot expire, so held
// always reports it held, and LockFenced excludes like Lock.
func TestMemoryLockerFenced(t *testing.T) {
	t.Parallel()
	l := NewMemoryLocker()
	ctx := context.Background()
	unlock, held, err := l.LockFenced(ctx, "k", time.Millisecond)
	if err != nil || held(ctx) != nil {
		t.Fatalf("LockFenced: %v, held: %v", err, held(ctx))
	}
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, _, err := l.LockFenced(short, "k", time.Millisecond); err == nil {
		t.Fatal("a second holder got the held lock")
	}
	unlock()
	unlock2, _, err := l.LockFenced(ctx, "k", time.Millisecond)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	unlock2()
}

// TestRefreshExpiryFromJWT is the clock moving while a refresh is at the
// provider: the session's access expiry is the token's exp, not the later
// now+expires_in read after the move, so the gateway refreshes before its
// upstreams refuse the token.
func TestRefreshExpiryFromJWT(t *testing.T) {
	t.Parallel()
	f := newFixture(t, false, nil)
	f.prov.jwtNow = f.clk.Now
	f.prov.delay = make(chan struct{})
	h, s := f.login(t, -time.Minute)
	ctx := context.Background()
	type out struct {
		s   *session.Session
		err error
	}
	done := make(chan out, 1)
	go func() {
		got, _, err := f.m.Fresh(ctx, f.store, h, s, false)
		done <- out{got, err}
	}()
	<-f.prov.arrived
	exp := time.Unix(f.clk.Now().Add(300*time.Second).Unix(), 0)
	f.clk.Add(2 * time.Minute)
	close(f.prov.delay)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !r.s.AccessExpiry.Equal(exp) {
		t.Fatalf("access expiry %v, want the token's exp %v (now+expires_in would be %v)", r.s.AccessExpiry, exp, f.clk.Now().Add(300*time.Second))
	}
	// Due at exp less the skew, not later.
	f.clk.Add(exp.Sub(f.clk.Now()) - DefaultSkew)
	if _, _, err := f.m.Fresh(ctx, f.store, h, r.s, false); err != nil || f.prov.refreshes.Load() != 2 {
		t.Errorf("at exp-skew: %v, %d refreshes (want 2)", err, f.prov.refreshes.Load())
	}
}
