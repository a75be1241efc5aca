// Package sessiontest is the contract suite that every session.Store
// passes (cookie, bbolt, redis): one suite, several implementations, in the
// manner of dex's storage/conformance.
//
// A store under test gets an injected clock; the suite moves it instead of
// sleeping, so idle and absolute expiry are tested to the nanosecond.
//
// # Stateless stores
//
// A store whose handle is the session itself (the cookie store) returns a
// new handle from every Update and cannot find the sessions it ends by sid
// or sub. The suite detects such a store (Update returns a different
// handle) and then:
//   - chains Updates through the returned handles instead of racing them on
//     one handle (a stateless store cannot merge concurrent writers);
//   - accepts 0 as the count from EndBySID and EndBySubject, but still
//     requires that later Gets refuse exactly the ended sessions.
//
// Everything else, including Delete making a handle dead, is the same for
// every store.
package sessiontest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/session"
)

// NewStoreFunc makes a fresh, empty store for one test. now is the clock
// the store must use for every expiry decision.
type NewStoreFunc func(t *testing.T, now func() time.Time) session.Store

// Clock is a manually moved clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock reading t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Start is where every test's clock starts: the current time with an odd
// nanosecond part (so that stores keeping less than nanoseconds are
// caught), without a monotonic reading.
func Start() time.Time {
	return time.Now().UTC().Truncate(time.Second).Add(123456789)
}

// Sample returns a session with every field set, as the gateway creates it
// at now: idle timeout 30 min, absolute lifetime 12 h.
func Sample(now time.Time, n int) *session.Session {
	sfx := strconv.Itoa(n)
	return &session.Session{
		ID:             "caller-chosen-id-" + sfx, // a store must ignore it (no fixation)
		Subject:        "user-" + sfx,
		SID:            "sid-" + sfx,
		Issuer:         "https://issuer.example/",
		Claims:         []byte(`{"sub":"user-` + sfx + `","name":"Ada Lovelace","email":"ada@example.com"}`),
		IDToken:        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLWlkLXRva2Vu" + sfx,
		AccessToken:    "access-token-secret-" + sfx + "-Zk9qW3xYb7uVt2",
		RefreshToken:   "refresh-token-secret-" + sfx + "-Qp8rS1mNc4eDf6",
		TokenType:      "Bearer",
		AccessExpiry:   now.Add(5 * time.Minute),
		Created:        now,
		LastSeen:       now,
		IdleTimeout:    30 * time.Minute,
		AbsoluteExpiry: now.Add(12 * time.Hour),
		Version:        7,
		Frontend:       "shop",
	}
}

// RunStoreTests runs the contract suite against stores made by newStore.
func RunStoreTests(t *testing.T, newStore func(t *testing.T, now func() time.Time) session.Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, session.Store, *Clock)
	}{
		{"RoundTrip", testRoundTrip},
		{"FreshHandlePerCreate", testFreshHandle},
		{"HandleHidesTokens", testHandleHidesTokens},
		{"Update", testUpdate},
		{"UpdateError", testUpdateError},
		{"UpdateAtomic", testUpdateAtomic},
		{"Delete", testDelete},
		{"BadHandles", testBadHandles},
		{"IdleExpiry", testIdleExpiry},
		{"AbsoluteExpiry", testAbsoluteExpiry},
		{"EndBySIDAndSubject", testEnd},
		{"EndFollowsUpdatedIdentity", testEndAfterUpdate},
		{"Ping", testPing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock(Start())
			st := newStore(t, clock.Now)
			tc.fn(t, st, clock)
		})
	}
}

func ctx(t *testing.T) context.Context { return t.Context() }

func create(t *testing.T, st session.Store, s *session.Session) string {
	t.Helper()
	h, err := st.Create(ctx(t), s)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if h == "" {
		t.Fatal("Create returned an empty handle")
	}
	return h
}

func get(t *testing.T, st session.Store, h string) *session.Session {
	t.Helper()
	s, err := st.Get(ctx(t), h)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if s == nil {
		t.Fatal("Get returned a nil session and no error")
	}
	return s
}

func wantNotFound(t *testing.T, st session.Store, h, why string) {
	t.Helper()
	s, err := st.Get(ctx(t), h)
	if !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get after %s = %+v, %v; want an error wrapping session.ErrNotFound", why, s, err)
	}
	if s != nil {
		t.Fatalf("Get after %s returned a session with its error", why)
	}
}

// diff lists the fields in which got differs from want, ID aside.
func diff(got, want *session.Session) []string {
	var d []string
	str := func(name, g, w string) {
		if g != w {
			d = append(d, fmt.Sprintf("%s = %q, want %q", name, g, w))
		}
	}
	tm := func(name string, g, w time.Time) {
		if !g.Equal(w) {
			d = append(d, fmt.Sprintf("%s = %v, want %v", name, g, w))
		}
	}
	str("Subject", got.Subject, want.Subject)
	str("SID", got.SID, want.SID)
	str("Issuer", got.Issuer, want.Issuer)
	str("Claims", string(got.Claims), string(want.Claims))
	str("IDToken", got.IDToken, want.IDToken)
	str("AccessToken", got.AccessToken, want.AccessToken)
	str("RefreshToken", got.RefreshToken, want.RefreshToken)
	str("TokenType", got.TokenType, want.TokenType)
	tm("AccessExpiry", got.AccessExpiry, want.AccessExpiry)
	tm("Created", got.Created, want.Created)
	tm("LastSeen", got.LastSeen, want.LastSeen)
	if got.IdleTimeout != want.IdleTimeout {
		d = append(d, fmt.Sprintf("IdleTimeout = %v, want %v", got.IdleTimeout, want.IdleTimeout))
	}
	tm("AbsoluteExpiry", got.AbsoluteExpiry, want.AbsoluteExpiry)
	if got.Version != want.Version {
		d = append(d, fmt.Sprintf("Version = %d, want %d", got.Version, want.Version))
	}
	if got.Frontend != want.Frontend {
		d = append(d, fmt.Sprintf("Frontend = %q, want %q", got.Frontend, want.Frontend))
	}
	return d
}

func wantSame(t *testing.T, got, want *session.Session) {
	t.Helper()
	if d := diff(got, want); len(d) > 0 {
		t.Fatalf("session differs:\n%s", strings.Join(d, "\n"))
	}
}

// isStateless reports whether st returns a new handle from Update (the
// session lives in the handle), probing with a session of its own.
func isStateless(t *testing.T, st session.Store, clock *Clock) bool {
	t.Helper()
	h := create(t, st, Sample(clock.Now(), 9999))
	h2, err := st.Update(ctx(t), h, func(*session.Session) error { return nil })
	if err != nil {
		t.Fatalf("Update (probe): %v", err)
	}
	if err := st.Delete(ctx(t), h2); err != nil {
		t.Fatalf("Delete (probe): %v", err)
	}
	return h2 != h
}

func testRoundTrip(t *testing.T, st session.Store, clock *Clock) {
	want := Sample(clock.Now(), 1)
	h := create(t, st, want)
	got := get(t, st, h)
	wantSame(t, got, want)
	if got.ID == "" {
		t.Error("Get returned an empty ID; stores give every session an identity")
	}
	if got.ID == want.ID {
		t.Errorf("ID = %q, the caller's; Create must choose a fresh identity", got.ID)
	}
	// The returned session is the caller's: changing it changes nothing.
	got.Claims[0] = 'X'
	got.AccessToken = "changed"
	again := get(t, st, h)
	wantSame(t, again, want)
	if again.ID != got.ID {
		t.Errorf("ID changed between Gets: %q then %q", got.ID, again.ID)
	}

	t.Run("MinimalSession", func(t *testing.T) {
		now := clock.Now()
		bare := &session.Session{Subject: "u", LastSeen: now, IdleTimeout: time.Minute, AbsoluteExpiry: now.Add(time.Hour)}
		h := create(t, st, bare)
		wantSame(t, get(t, st, h), bare)
	})
}

func testFreshHandle(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	h1 := create(t, st, s)
	h2 := create(t, st, s)
	if h1 == h2 {
		t.Fatal("two Creates of one session returned the same handle")
	}
	a, b := get(t, st, h1), get(t, st, h2)
	if a.ID == b.ID {
		t.Fatalf("two Creates gave the same ID %q", a.ID)
	}
	if err := st.Delete(ctx(t), h1); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, st, h1, "Delete")
	get(t, st, h2) // the other session lives on
}

func testHandleHidesTokens(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	h := create(t, st, s)
	for name, secret := range map[string]string{
		"access token": s.AccessToken, "refresh token": s.RefreshToken, "subject": s.Subject, "email": "ada@example.com",
	} {
		if strings.Contains(h, secret) {
			t.Errorf("the handle carries the %s in the clear", name)
		}
	}
}

func testUpdate(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	h := create(t, st, s)
	id := get(t, st, h).ID
	clock.Advance(time.Minute)
	now := clock.Now()
	var seen []string
	h2, err := st.Update(ctx(t), h, func(cur *session.Session) error {
		seen = diff(cur, s) // no t.Fatal inside a store's transaction
		cur.AccessToken = "new-access-token"
		cur.RefreshToken = "rotated-refresh-token"
		cur.AccessExpiry = now.Add(5 * time.Minute)
		cur.LastSeen = now
		cur.ID = "attempt-to-change-the-id"
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if h2 == "" {
		t.Fatal("Update returned an empty handle")
	}
	if len(seen) > 0 {
		t.Errorf("fn saw a session that differs from the stored one:\n%s", strings.Join(seen, "\n"))
	}
	want := *s
	want.AccessToken, want.RefreshToken = "new-access-token", "rotated-refresh-token"
	want.AccessExpiry, want.LastSeen = now.Add(5*time.Minute), now
	want.Version = s.Version + 1
	got := get(t, st, h2)
	wantSame(t, got, &want)
	if got.ID != id {
		t.Errorf("Update changed the ID from %q to %q; it is the store's", id, got.ID)
	}
}

func testUpdateError(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	h := create(t, st, s)
	boom := errors.New("refresh failed")
	_, err := st.Update(ctx(t), h, func(cur *session.Session) error {
		cur.AccessToken = "must-not-be-stored"
		cur.Subject = "must-not-be-stored"
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update = %v; want fn's error", err)
	}
	wantSame(t, get(t, st, h), s)
}

func counter(s *session.Session) int {
	n, _ := strconv.Atoi(string(s.Claims))
	return n
}

func testUpdateAtomic(t *testing.T, st session.Store, clock *Clock) {
	stateless := isStateless(t, st, clock)
	s := Sample(clock.Now(), 1)
	s.Claims, s.Version = []byte("0"), 0
	h := create(t, st, s)
	inc := func(cur *session.Session) error {
		cur.Claims = []byte(strconv.Itoa(counter(cur) + 1))
		return nil
	}
	const workers, each = 8, 6
	if stateless {
		// The session lives in the handle: each Update starts from the
		// handle the last one returned.
		for range workers * each {
			var err error
			if h, err = st.Update(ctx(t), h, inc); err != nil {
				t.Fatalf("Update: %v", err)
			}
		}
	} else {
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Go(func() {
				for range each {
					if _, err := st.Update(ctx(t), h, inc); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("concurrent Update: %v", err)
		}
	}
	got := get(t, st, h)
	if n := counter(got); n != workers*each {
		t.Errorf("counter = %d after %d Updates: updates were lost", n, workers*each)
	}
	if got.Version != workers*each {
		t.Errorf("Version = %d after %d Updates, want %d", got.Version, workers*each, workers*each)
	}
}

func testDelete(t *testing.T, st session.Store, clock *Clock) {
	h := create(t, st, Sample(clock.Now(), 1))
	other := create(t, st, Sample(clock.Now(), 2))
	if err := st.Delete(ctx(t), h); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantNotFound(t, st, h, "Delete")
	if err := st.Delete(ctx(t), h); err != nil {
		t.Fatalf("second Delete = %v; deleting an unknown session is no error", err)
	}
	called := false
	if _, err := st.Update(ctx(t), h, func(*session.Session) error { called = true; return nil }); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Update after Delete = %v; want session.ErrNotFound", err)
	}
	if called {
		t.Error("Update called fn for a deleted session")
	}
	wantNotFound(t, st, h, "Update of a deleted session")
	get(t, st, other)
}

// mangle returns variants of a valid handle that no store may accept.
func mangle(h string) map[string]string {
	flip := func(i int) string {
		b := []byte(h)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	return map[string]string{
		"empty":           "",
		"one char":        "x",
		"not base64":      "!!!!***%%%%\x00\xff",
		"truncated by 1":  h[:len(h)-1],
		"truncated half":  h[:len(h)/2],
		"extended":        h + "A",
		"doubled":         h + h,
		"first flipped":   flip(0),
		"middle flipped":  flip(len(h) / 2),
		"last-1 flipped":  flip(len(h) - 2),
		"all A same size": strings.Repeat("A", len(h)),
		"huge":            strings.Repeat("QUJD", 64<<10),
		"with spaces":     " " + h + " ",
		"upper-cased":     strings.ToUpper(h),
	}
}

func testBadHandles(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	h := create(t, st, s)
	for name, bad := range mangle(h) {
		if bad == h {
			continue
		}
		t.Run(name, func(t *testing.T) {
			wantNotFound(t, st, bad, "a "+name+" handle")
			called := false
			_, err := st.Update(ctx(t), bad, func(*session.Session) error { called = true; return nil })
			if !errors.Is(err, session.ErrNotFound) {
				t.Errorf("Update = %v; want session.ErrNotFound", err)
			}
			if called {
				t.Error("Update called fn for a bad handle")
			}
			if err := st.Delete(ctx(t), bad); err != nil {
				t.Errorf("Delete = %v; want nil (an unknown session)", err)
			}
		})
	}
	// None of the bad handles, deleted or not, touched the real session.
	wantSame(t, get(t, st, h), s)
}

func slide(t *testing.T, st session.Store, clock *Clock, h string) string {
	t.Helper()
	now := clock.Now()
	h2, err := st.Update(ctx(t), h, func(cur *session.Session) error { cur.LastSeen = now; return nil })
	if err != nil {
		t.Fatalf("Update (slide): %v", err)
	}
	return h2
}

func wantGoneForGood(t *testing.T, st session.Store, h, why string) {
	t.Helper()
	wantNotFound(t, st, h, why)
	called := false
	later := time.Now().Add(24 * time.Hour)
	_, err := st.Update(ctx(t), h, func(cur *session.Session) error {
		called = true
		cur.LastSeen, cur.AbsoluteExpiry = later, later
		return nil
	})
	if !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Update after %s = %v; want session.ErrNotFound", why, err)
	}
	if called {
		t.Errorf("Update called fn after %s: an expired session is gone", why)
	}
	wantNotFound(t, st, h, why+" and an Update")
}

func testIdleExpiry(t *testing.T, st session.Store, clock *Clock) {
	h := create(t, st, Sample(clock.Now(), 1)) // idle 30 min
	clock.Advance(29 * time.Minute)
	get(t, st, h)
	h = slide(t, st, clock, h)
	clock.Advance(29 * time.Minute)
	get(t, st, h) // 58 min after creation, 29 after the slide
	clock.Advance(time.Minute - time.Nanosecond)
	get(t, st, h) // one nanosecond before the idle deadline
	clock.Advance(time.Nanosecond)
	wantGoneForGood(t, st, h, "the idle deadline")
}

func testAbsoluteExpiry(t *testing.T, st session.Store, clock *Clock) {
	s := Sample(clock.Now(), 1)
	s.AbsoluteExpiry = s.Created.Add(time.Hour)
	h := create(t, st, s)
	for range 2 {
		clock.Advance(20 * time.Minute)
		h = slide(t, st, clock, h)
	}
	clock.Advance(20*time.Minute - time.Nanosecond)
	get(t, st, h)
	clock.Advance(time.Nanosecond)
	wantGoneForGood(t, st, h, "the absolute deadline")
}

func endCount(t *testing.T, name string, n int, err error, want int, stateless bool) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if n != want && !(stateless && n == 0) {
		t.Errorf("%s ended %d sessions, want %d", name, n, want)
	}
}

func testEnd(t *testing.T, st session.Store, clock *Clock) {
	stateless := isStateless(t, st, clock)
	now := clock.Now()
	mk := func(n int, sid, sub string) string {
		s := Sample(now, n)
		s.SID, s.Subject = sid, sub
		return create(t, st, s)
	}
	a := mk(1, "s1", "u1")
	b := mk(2, "s2", "u1")
	c := mk(3, "s3", "u2")
	d := mk(4, "", "u1")
	e := mk(5, "s1", "u3")
	f := mk(6, "", "")

	n, err := st.EndBySID(ctx(t), "")
	endCount(t, `EndBySID("")`, n, err, 0, stateless)
	n, err = st.EndBySID(ctx(t), "no-such-sid")
	endCount(t, "EndBySID(unknown)", n, err, 0, stateless)
	n, err = st.EndBySubject(ctx(t), "")
	endCount(t, `EndBySubject("")`, n, err, 0, stateless)
	for _, h := range []string{a, b, c, d, e, f} {
		get(t, st, h)
	}

	n, err = st.EndBySID(ctx(t), "s1")
	endCount(t, "EndBySID(s1)", n, err, 2, stateless)
	wantNotFound(t, st, a, "EndBySID")
	wantNotFound(t, st, e, "EndBySID")
	for _, h := range []string{b, c, d, f} {
		get(t, st, h)
	}

	n, err = st.EndBySubject(ctx(t), "u1")
	endCount(t, "EndBySubject(u1)", n, err, 2, stateless)
	wantNotFound(t, st, b, "EndBySubject")
	wantNotFound(t, st, d, "EndBySubject")
	get(t, st, c)
	get(t, st, f)

	n, err = st.EndBySID(ctx(t), "s1")
	endCount(t, "EndBySID(s1) again", n, err, 0, stateless)

	// A login after the logout is a new session and lives.
	clock.Advance(time.Second)
	s := Sample(clock.Now(), 7)
	s.SID, s.Subject = "s7", "u1"
	g := create(t, st, s)
	get(t, st, g)
	get(t, st, c)
}

func testEndAfterUpdate(t *testing.T, st session.Store, clock *Clock) {
	stateless := isStateless(t, st, clock)
	s := Sample(clock.Now(), 1)
	s.SID, s.Subject = "old-sid", "old-sub"
	h := create(t, st, s)
	h, err := st.Update(ctx(t), h, func(cur *session.Session) error {
		cur.SID, cur.Subject = "new-sid", "new-sub"
		return nil
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	n, err := st.EndBySID(ctx(t), "old-sid")
	endCount(t, "EndBySID(old-sid)", n, err, 0, stateless)
	n, err = st.EndBySubject(ctx(t), "old-sub")
	endCount(t, "EndBySubject(old-sub)", n, err, 0, stateless)
	get(t, st, h)
	n, err = st.EndBySID(ctx(t), "new-sid")
	endCount(t, "EndBySID(new-sid)", n, err, 1, stateless)
	wantNotFound(t, st, h, "EndBySID of the updated sid")

	h2 := create(t, st, Sample(clock.Now(), 2))
	if err := st.Delete(ctx(t), h2); err != nil {
		t.Fatal(err)
	}
	n, err = st.EndBySubject(ctx(t), "user-2")
	endCount(t, "EndBySubject after Delete", n, err, 0, stateless)
}

func testPing(t *testing.T, st session.Store, _ *Clock) {
	if err := st.Ping(ctx(t)); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}
