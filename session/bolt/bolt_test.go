package bolt

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/sessiontest"
)

func openDB(t testing.TB, path string) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return db
}

func newStore(t testing.TB, now func() time.Time) (*Store, *bbolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bffgate.db")
	db := openDB(t, path)
	t.Cleanup(func() { db.Close() })
	st, err := New(db, Config{Now: now, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return st, db, path
}

func TestStoreContract(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		st, _, _ := newStore(t, now)
		return st
	})
}

func TestNewErrors(t *testing.T) {
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil db) succeeded")
	}
	db := openDB(t, filepath.Join(t.TempDir(), "x.db"))
	defer db.Close()
	if _, err := New(db, Config{SweepBatch: -1}); err == nil {
		t.Error("New with a negative SweepBatch succeeded")
	}
	reg := prometheus.NewRegistry()
	if _, err := New(db, Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(db, Config{Registerer: reg}); err == nil {
		t.Error("a second store on one registry succeeded; its metrics would clash")
	}
}

// TestFileHoldsNoSecrets scans the raw data file: no token, claim or
// ticket key may appear in it, in the clear or base64-encoded.
func TestFileHoldsNoSecrets(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	st, db, path := newStore(t, clock.Now)
	s := sessiontest.Sample(clock.Now(), 1)
	s.AccessToken = "AT-4f1c2e9a7b3d5e6f-plain-access-token-marker"
	s.RefreshToken = "RT-0a9b8c7d6e5f4a3b-plain-refresh-token-marker"
	s.Claims = []byte(`{"email":"secret-claim-marker@example.com"}`)
	h, err := st.Create(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Update(t.Context(), h, func(s *session.Session) error { s.AccessToken += "-v2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := db.Sync(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := base64.RawURLEncoding.DecodeString(h)
	for name, secret := range map[string][]byte{
		"access token":        []byte(s.AccessToken),
		"refresh token":       []byte(s.RefreshToken),
		"claim":               []byte("secret-claim-marker"),
		"id token":            []byte(s.IDToken),
		"ticket key":          key[16:],
		"handle":              []byte(h),
		"access token b64url": []byte(base64.RawURLEncoding.EncodeToString([]byte(s.AccessToken))),
	} {
		if bytes.Contains(raw, secret) {
			t.Errorf("the data file holds the %s", name)
		}
	}
	if !bytes.Contains(raw, bucketRecords) {
		t.Fatal("the scan read no bucket names: the file looks empty, so the test proves nothing")
	}
}

// TestReopen closes the file as a killed process would leave it and opens
// it again: committed sessions are all there.
func TestReopen(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	path := filepath.Join(t.TempDir(), "bffgate.db")
	db := openDB(t, path)
	st, err := New(db, Config{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	want := sessiontest.Sample(clock.Now(), 1)
	h, err := st.Create(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := st.Create(t.Context(), sessiontest.Sample(clock.Now(), 2))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.EndBySID(t.Context(), "sid-2"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(t.Context(), h); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Get on a closed file = %v; want session.ErrUnavailable", err)
	}
	if err := st.Ping(t.Context()); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Ping on a closed file = %v; want session.ErrUnavailable", err)
	}

	db = openDB(t, path)
	defer db.Close()
	st, err = New(db, Config{Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(t.Context(), h)
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if got.AccessToken != want.AccessToken || got.Version != want.Version {
		t.Errorf("after reopen: %+v", got)
	}
	if _, err := st.Get(t.Context(), gone); !errors.Is(err, session.ErrNotFound) {
		t.Errorf("an ended session came back after reopen: %v", err)
	}
}

func bucketLen(t *testing.T, db *bbolt.DB, name []byte) int {
	t.Helper()
	n := 0
	if err := db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(name); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestSweep(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	path := filepath.Join(t.TempDir(), "bffgate.db")
	db := openDB(t, path)
	defer db.Close()
	st, err := New(db, Config{Now: clock.Now, SweepBatch: 3}) // several batches
	if err != nil {
		t.Fatal(err)
	}
	var short, long []string
	for i := range 10 {
		s := sessiontest.Sample(clock.Now(), i)
		if i%2 == 0 {
			s.IdleTimeout = time.Minute
		}
		h, err := st.Create(t.Context(), s)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			short = append(short, h)
		} else {
			long = append(long, h)
		}
	}
	// A slid session's old expiry entry must not sweep it.
	clock.Advance(50 * time.Second)
	now := clock.Now()
	if _, err := st.Update(t.Context(), short[0], func(s *session.Session) error { s.LastSeen = now; return nil }); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Sweep(clock.Now()); err != nil || n != 0 {
		t.Fatalf("Sweep before any expiry = %d, %v; want 0", n, err)
	}
	clock.Advance(15 * time.Second) // 65 s: the four unslid short sessions expired
	n, err := st.Sweep(clock.Now())
	if err != nil || n != 4 {
		t.Fatalf("Sweep = %d, %v; want 4", n, err)
	}
	if _, err := st.Get(t.Context(), short[0]); err != nil {
		t.Errorf("the slid session was swept: %v", err)
	}
	for _, h := range long {
		if _, err := st.Get(t.Context(), h); err != nil {
			t.Errorf("a live session was swept: %v", err)
		}
	}
	for name, want := range map[string]int{
		string(bucketRecords): 6, string(bucketBySID): 6, string(bucketBySub): 6, string(bucketExpiry): 6,
	} {
		if got := bucketLen(t, db, []byte(name)); got != want {
			t.Errorf("%s holds %d keys after the sweep, want %d", name, got, want)
		}
	}
	clock.Advance(13 * time.Hour)
	if n, err := st.Sweep(clock.Now()); err != nil || n != 6 {
		t.Fatalf("final Sweep = %d, %v; want 6", n, err)
	}
	for _, name := range [][]byte{bucketRecords, bucketBySID, bucketBySub, bucketExpiry} {
		if got := bucketLen(t, db, name); got != 0 {
			t.Errorf("%s holds %d keys after sweeping everything", name, got)
		}
	}
}

func TestRunSweeps(t *testing.T) {
	past := sessiontest.NewClock(sessiontest.Start().Add(-24 * time.Hour))
	st, db, _ := newStore(t, past.Now)
	s := sessiontest.Sample(past.Now(), 1)
	s.IdleTimeout = time.Minute
	if _, err := st.Create(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	// Run uses the store's clock; move it to the present, where the
	// session has long expired, and wait for the sweeper to catch it.
	past.Advance(24 * time.Hour)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { st.Run(ctx, time.Millisecond); close(done) }()
	for bucketLen(t, db, bucketRecords) != 0 {
		time.Sleep(time.Millisecond) // polling for the sweeper's effect, not timing it
	}
	cancel()
	<-done
}

func TestEnded(t *testing.T) {
	db := openDB(t, filepath.Join(t.TempDir(), "bffgate.db"))
	defer db.Close()
	e := NewEnded(db)
	ctx := t.Context()
	t0 := time.Date(2031, 1, 2, 3, 4, 5, 6, time.UTC)
	if ok, err := e.Ended(ctx, "s1", "u1", t0); err != nil || ok {
		t.Fatalf("Ended on an empty file = %v, %v", ok, err)
	}
	if err := e.EndSID(ctx, "s1", t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := e.EndSubject(ctx, "u1", t0, t0.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		sid, sub string
		created  time.Time
		want     bool
	}{
		{"ended sid", "s1", "other", t0.Add(time.Minute), true},
		{"ended subject, created before", "s9", "u1", t0.Add(-time.Minute), true},
		{"ended subject, created at since", "", "u1", t0, true},
		{"ended subject, created after", "s9", "u1", t0.Add(time.Nanosecond), false},
		{"other sid and subject", "s2", "u2", t0, false},
		{"empty", "", "", t0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.Ended(ctx, tc.sid, tc.sub, tc.created)
			if err != nil || got != tc.want {
				t.Errorf("Ended(%q, %q) = %v, %v; want %v", tc.sid, tc.sub, got, err, tc.want)
			}
		})
	}
	if err := e.EndSID(ctx, "", t0); err == nil {
		t.Error("EndSID(\"\") succeeded")
	}
	if err := e.EndSubject(ctx, "", t0, t0); err == nil {
		t.Error("EndSubject(\"\") succeeded")
	}
	// A shorter second ending does not shorten the first.
	if err := e.EndSID(ctx, "s1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if n, err := e.Sweep(t0.Add(30 * time.Minute)); err != nil || n != 0 {
		t.Fatalf("Sweep at +30m = %d, %v; want 0", n, err)
	}
	if n, err := e.Sweep(t0.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("Sweep at +1h = %d, %v; want 1 (the sid)", n, err)
	}
	if ok, _ := e.Ended(ctx, "s1", "", t0); ok {
		t.Error("the swept sid is still ended")
	}
	if n, err := e.Sweep(t0.Add(3 * time.Hour)); err != nil || n != 1 {
		t.Fatalf("Sweep at +3h = %d, %v; want 1 (the subject)", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	// An answer remembered before the close still holds (nothing can have
	// ended the session since); anything else needs the file.
	if _, err := e.Ended(ctx, "s-new", "", t0); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Ended on a closed file = %v; want session.ErrUnavailable", err)
	}
	if err := e.Ping(ctx); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Ping on a closed file = %v; want session.ErrUnavailable", err)
	}
}

// A data file bbolt opened read-only (as after a mount turned read-only)
// refuses writes with an error matching session.ErrUnavailable that names
// the file, not a panic or a bare bbolt error.
func TestReadOnlyFileIsUnavailable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "bffgate.db")
	db := openDB(t, path)
	if _, err := New(db, Config{}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	ro, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	_, err = New(ro, Config{})
	if !errors.Is(err, session.ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Errorf("New on a read-only file = %v; want ErrUnavailable naming %s", err, path)
	}
	e := NewEnded(ro)
	err = e.EndSID(t.Context(), "sid", time.Now().Add(time.Hour))
	if !errors.Is(err, session.ErrUnavailable) || !strings.Contains(err.Error(), path) {
		t.Errorf("EndSID on a read-only file = %v; want ErrUnavailable naming %s", err, path)
	}
}
