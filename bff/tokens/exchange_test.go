package tokens

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// TestExchangeCacheSweeps: entries of ended or refreshed sessions go as
// new ones come in; a live entry is served only for its subject token.
func TestExchangeCacheSweeps(t *testing.T) {
	t.Parallel()
	var c exchangeCache
	now := time.Now()
	for i := range 1000 {
		c.put(fmt.Sprintf("old-%d", i), "orders", exchanged{subject: "s", token: "t", until: now.Add(time.Second)}, now)
	}
	later := now.Add(2 * time.Second)
	for i := range 200 {
		c.put("new", fmt.Sprint(i), exchanged{subject: "s", token: "t", until: later.Add(time.Minute)}, later)
	}
	c.mu.Lock()
	n, sessions := c.n, len(c.m)
	c.mu.Unlock()
	if n > 400 || sessions > 400 {
		t.Fatalf("%d entries of %d sessions after 1000 expired and 200 live ones, want the expired swept", n, sessions)
	}
	if tok, ok := c.get("new", "1", "s", later); !ok || tok != "t" {
		t.Fatal("a live entry is not served")
	}
	if _, ok := c.get("new", "1", "another subject token", later); ok {
		t.Fatal("an entry was served for another subject token (the session refreshed)")
	}
	if _, ok := c.get("new", "1", "s", later.Add(time.Hour)); ok {
		t.Fatal("an expired entry was served")
	}
	c.forget("new", "1", "another token")
	if _, ok := c.get("new", "1", "s", later); !ok {
		t.Fatal("forget dropped an entry holding another token")
	}
	c.forgetSession("new")
	if _, ok := c.get("new", "2", "s", later); ok || c.n != 0 {
		t.Fatalf("forgetSession left entries (%d)", c.n)
	}
}

// BenchmarkExchangedCached is the per-request cost of a route with
// token.exchange once the session's exchanged token is cached: a hash of
// the session's access token and a map read.
func BenchmarkExchangedCached(b *testing.B) {
	m := &Manager{cfg: Config{Now: time.Now}}
	now := time.Now()
	s := &session.Session{ID: "session-id-0123456789", AccessToken: strings.Repeat("a", 900)}
	target := ExchangeTarget{Audience: "orders-api", Scope: "openid profile"}
	m.exchanges.put(flightKey(s), hashOf(target.key()), exchanged{subject: hashOf(s.AccessToken), token: "exchanged", until: now.Add(time.Hour)}, now)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if tok, err := m.Exchanged(ctx, s, target); err != nil || tok != "exchanged" {
			b.Fatal(tok, err)
		}
	}
}

// TestRefreshOnRefusal: one forced refresh per session access token.
func TestRefreshOnRefusal(t *testing.T) {
	t.Parallel()
	now := time.Now()
	m := &Manager{cfg: Config{Now: func() time.Time { return now }}}
	s := &session.Session{ID: "s", AccessToken: "at-1"}
	if !m.RefreshOnRefusal(s) || m.RefreshOnRefusal(s) {
		t.Fatal("want true once for one access token, then false")
	}
	if !m.RefreshOnRefusal(&session.Session{ID: "s", AccessToken: "at-2"}) {
		t.Fatal("a new access token (the session refreshed) may force again")
	}
	now = now.Add(refusalWindow)
	if !m.RefreshOnRefusal(s) {
		t.Fatal("after the window, the same token may force again")
	}
}
