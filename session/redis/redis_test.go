package redis

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
	"github.com/bffgate/bffgate/session/sessiontest"
)

func newTestStore(tb testing.TB, now func() time.Time) (*Store, goredis.UniversalClient) {
	tb.Helper()
	c := redistest.Client(tb)
	s, err := New(c, Config{Prefix: redistest.Prefix(tb, c, "session:"), Now: now})
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	return s, c
}

func TestStore(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		s, _ := newTestStore(t, now)
		return s
	})
}

// TestRedisHoldsOnlyCiphertext: what Redis holds under a session's id
// contains no token, and the TTL is the session's expiry.
func TestRedisHoldsOnlyCiphertext(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	s, c := newTestStore(t, clock.Now)
	ctx := context.Background()
	sess := sessiontest.Sample(clock.Now(), 1)
	h, err := s.Create(ctx, sess)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := codec.ParseTicket(h)
	if err != nil {
		t.Fatal(err)
	}
	key := s.e.recordKey(tk.IDBytes())
	rec, err := c.Get(ctx, key).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{sess.AccessToken, sess.RefreshToken, sess.IDToken, "Ada Lovelace", h} {
		if bytes.Contains(rec, []byte(secret)) {
			t.Errorf("the Redis record holds %q in the clear", secret)
		}
	}
	at, err := c.PExpireTime(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Duration(expiryMS(sess.ExpiresAt())) * time.Millisecond; at != want {
		t.Errorf("record expires at %v, want the session's expiry %v", at, want)
	}
	// The index entries exist and expire with it.
	for _, k := range []string{s.e.sidKey(sess.SID), s.e.subKey(sess.Subject)} {
		if n, err := c.ZCard(ctx, k).Result(); err != nil || n != 1 {
			t.Errorf("index %s has %d members (%v), want 1", k, n, err)
		}
		if ttl, _ := c.PTTL(ctx, k).Result(); ttl <= 0 {
			t.Errorf("index %s has no TTL", k)
		}
	}
	// A slide moves the TTL on.
	clock.Advance(10 * time.Minute)
	if _, err := s.Update(ctx, h, func(cur *session.Session) error { cur.LastSeen = clock.Now(); return nil }); err != nil {
		t.Fatal(err)
	}
	at2, _ := c.PExpireTime(ctx, key).Result()
	if at2-at != 10*time.Minute {
		t.Errorf("after a 10 min slide the record's expiry moved by %v", at2-at)
	}
	// Delete removes the record and its index entries.
	if err := s.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{key, s.e.sidKey(sess.SID), s.e.subKey(sess.Subject)} {
		if n, _ := c.Exists(ctx, k).Result(); n != 0 {
			t.Errorf("%s still exists after Delete", k)
		}
	}
}

// TestTwoInstances: a session created through one Store (gateway A) is
// read, updated and ended through another (gateway B) on the same Redis.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	a, _ := newTestStore(t, clock.Now)
	b, err := New(redistest.Client(t), Config{Prefix: a.e.prefix, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	h, err := a.Create(ctx, sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Update(ctx, h, func(s *session.Session) error { s.AccessToken = "new"; return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := a.Get(ctx, h)
	if err != nil || got.AccessToken != "new" {
		t.Fatalf("A sees %+v, %v after B's update", got, err)
	}
	if n, err := b.EndBySID(ctx, "sid-1"); err != nil || n != 1 {
		t.Fatalf("EndBySID through B = %d, %v", n, err)
	}
	if _, err := a.Get(ctx, h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("A still has the session B ended: %v", err)
	}
}

// TestStaleIndexEntry: an index entry whose record says otherwise (a crash
// between the index write and the record's, or a record rewritten by
// another instance) ends nothing.
func TestStaleIndexEntry(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	s, c := newTestStore(t, clock.Now)
	ctx := context.Background()
	h, err := s.Create(ctx, sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	tk, _ := codec.ParseTicket(h)
	// Plant the session's id in another sid's index, and a missing id.
	c.ZAdd(ctx, s.e.sidKey("other"), goredis.Z{Score: 1e15, Member: tk.ID()}, goredis.Z{Score: 1e15, Member: "missing"})
	if n, err := s.EndBySID(ctx, "other"); err != nil || n != 0 {
		t.Fatalf("EndBySID(other) = %d, %v; want 0", n, err)
	}
	if _, err := s.Get(ctx, h); err != nil {
		t.Fatalf("a stale index entry ended a live session: %v", err)
	}
	if n, _ := c.ZCard(ctx, s.e.sidKey("other")).Result(); n != 0 {
		t.Errorf("stale entries not pruned: %d left", n)
	}
}

func TestUnavailable(t *testing.T) {
	t.Parallel()
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1, DialTimeout: 200 * time.Millisecond})
	defer c.Close()
	s, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tk, _ := codec.NewTicket()
	h := tk.Handle()
	_, errCreate := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
	_, errGet := s.Get(ctx, h)
	_, errUpdate := s.Update(ctx, h, func(*session.Session) error { return nil })
	_, errEnd := s.EndBySID(ctx, "sid")
	e := NewEnded(c, "")
	_, errEnded := e.Ended(ctx, "sid", "sub", time.Now())
	for name, err := range map[string]error{
		"Create": errCreate, "Get": errGet, "Update": errUpdate, "Delete": s.Delete(ctx, h),
		"EndBySID": errEnd, "Ping": s.Ping(ctx), "Ended": errEnded,
		"EndSID": e.EndSID(ctx, "sid", time.Now().Add(time.Hour)),
	} {
		if !errors.Is(err, session.ErrUnavailable) {
			t.Errorf("%s on unreachable Redis = %v, want ErrUnavailable", name, err)
		}
	}
	// A malformed handle is not found, not unavailable: no Redis call.
	if _, err := s.Get(ctx, "nonsense"); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("Get(nonsense) = %v, want ErrNotFound", err)
	}
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil) succeeded")
	}
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:1"})
	defer c.Close()
	if _, err := New(c, Config{MaxRetries: -1}); err == nil {
		t.Error("New with negative MaxRetries succeeded")
	}
	s, err := New(c, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.e.recordKey([]byte{0xfb, 0xff}); got != "bffgate:session:r:-_8" {
		t.Errorf("default record key = %q", got)
	}
}

func TestEnded(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	e := NewEnded(c, redistest.Prefix(t, c, "session:"))
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second).Add(123456789)
	until := now.Add(time.Hour)
	check := func(sid, sub string, created time.Time, want bool) {
		t.Helper()
		got, err := e.Ended(ctx, sid, sub, created)
		if err != nil || got != want {
			t.Fatalf("Ended(%q, %q, %v) = %v, %v; want %v", sid, sub, created, got, err, want)
		}
	}
	check("s1", "u1", now, false)
	check("", "", now, false)
	if err := e.EndSID(ctx, "s1", until); err != nil {
		t.Fatal(err)
	}
	check("s1", "", now, true)
	check("s2", "u1", now, false)
	if err := e.EndSubject(ctx, "u1", now, until); err != nil {
		t.Fatal(err)
	}
	check("", "u1", now, true)                       // created at since: ended
	check("", "u1", now.Add(-time.Nanosecond), true) // before
	check("", "u1", now.Add(time.Nanosecond), false) // a later login lives
	// An earlier since does not narrow the record; a later one widens it.
	if err := e.EndSubject(ctx, "u1", now.Add(-time.Hour), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("", "u1", now, true)
	if err := e.EndSubject(ctx, "u1", now.Add(time.Second), now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	check("", "u1", now.Add(time.Nanosecond), true)
	// The TTL never moves earlier.
	ttl, err := c.PTTL(ctx, e.subKey("u1")).Result()
	if err != nil || ttl < 59*time.Minute {
		t.Fatalf("TTL after a shorter until = %v, %v; want about an hour", ttl, err)
	}
	// Several sids and a subject at once: any one ended decides.
	checkAny := func(sids []string, sub string, created time.Time, want bool) {
		t.Helper()
		got, err := e.EndedAny(ctx, sids, sub, created)
		if err != nil || got != want {
			t.Fatalf("EndedAny(%q, %q, %v) = %v, %v; want %v", sids, sub, created, got, err, want)
		}
	}
	checkAny(nil, "", now, false)
	checkAny([]string{"", ""}, "", now, false)
	checkAny([]string{"s2", "s3"}, "u2", now, false)
	checkAny([]string{"s2", "s1"}, "u2", now, true)
	checkAny([]string{"", "s1"}, "", now, true)
	checkAny([]string{"s2", ""}, "u1", now, true)
	checkAny([]string{"s2"}, "u1", now.Add(2*time.Second), false)
	if err := e.EndSID(ctx, "", until); err == nil {
		t.Error("EndSID(\"\") succeeded")
	}
	if err := e.EndSubject(ctx, "u", now, time.Time{}); err == nil {
		t.Error("EndSubject with zero until succeeded")
	}
}

func BenchmarkGet(b *testing.B) {
	s, _ := newTestStore(b, nil)
	ctx := context.Background()
	h, err := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Get(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUpdate(b *testing.B) {
	s, _ := newTestStore(b, nil)
	ctx := context.Background()
	h, err := s.Create(ctx, sessiontest.Sample(time.Now(), 1))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Update(ctx, h, func(cur *session.Session) error { cur.LastSeen = time.Now(); return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// An Update that keeps losing its WATCH to other writers gives up after
// Config.MaxRetries attempts with an error matching session.ErrUnavailable
// (the gateway answers 503 and keeps the session), having written nothing.
func TestUpdateConflictsAreBounded(t *testing.T) {
	t.Parallel()
	clock := sessiontest.NewClock(sessiontest.Start())
	c := redistest.Client(t)
	s, err := New(c, Config{Prefix: redistest.Prefix(t, c, "session:"), Now: clock.Now, MaxRetries: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h, err := s.Create(ctx, sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	tk, err := codec.ParseTicket(h)
	if err != nil {
		t.Fatal(err)
	}
	key := s.e.recordKey(tk.IDBytes())
	runs := 0
	_, err = s.Update(ctx, h, func(x *session.Session) error {
		runs++
		// Another writer touches the record between this read and the
		// EXEC: the transaction fails and is tried again.
		rec, err := c.Get(ctx, key).Bytes()
		if err != nil {
			return err
		}
		if err := c.Set(ctx, key, rec, goredis.KeepTTL).Err(); err != nil {
			return err
		}
		x.AccessToken = "lost"
		return nil
	})
	if !errors.Is(err, session.ErrUnavailable) || runs != 3 {
		t.Fatalf("Update = %v after %d runs; want ErrUnavailable after 3", err, runs)
	}
	got, err := s.Get(ctx, h)
	if err != nil || got.AccessToken == "lost" || got.Version != 7 {
		t.Errorf("after the failed Update: %+v, %v; want the session unchanged", got, err)
	}
}
