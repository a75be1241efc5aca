package cookie

import (
	"crypto/rand"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/session"
	sbolt "github.com/bffgate/bffgate/session/bolt"
	"github.com/bffgate/bffgate/session/sessiontest"
)

func randKey(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func newKeyPair(t testing.TB) KeyPair {
	return KeyPair{Hash: randKey(t, 32), Block: randKey(t, 32)}
}

func newEnded(t testing.TB) *sbolt.Ended {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "bffgate.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return sbolt.NewEnded(db)
}

func newStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Keys == nil {
		cfg.Keys = []KeyPair{newKeyPair(t)}
	}
	if cfg.Ended == nil {
		cfg.Ended = newEnded(t)
	}
	st, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return st
}

func TestStoreContract(t *testing.T) {
	sessiontest.RunStoreTests(t, func(t *testing.T, now func() time.Time) session.Store {
		return newStore(t, Config{Now: now})
	})
}

func TestNewValidates(t *testing.T) {
	ended := newEnded(t)
	good := newKeyPair(t)
	for _, tc := range []struct {
		name, want string
		cfg        Config
	}{
		{"no keys", "Config.Keys is empty", Config{Ended: ended}},
		{"short hash", "Config.Keys[1].Hash is 16 bytes", Config{Ended: ended, Keys: []KeyPair{good, {Hash: randKey(t, 16), Block: randKey(t, 32)}}}},
		{"bad block", "Config.Keys[0].Block is 20 bytes", Config{Ended: ended, Keys: []KeyPair{{Hash: randKey(t, 64), Block: randKey(t, 20)}}}},
		{"no block", "Config.Keys[0].Block is 0 bytes", Config{Ended: ended, Keys: []KeyPair{{Hash: randKey(t, 64)}}}},
		{"no ended store", "Config.Ended is nil", Config{Keys: []KeyPair{good}}},
		{"negative size", "Config.MaxSize is -1", Config{Ended: ended, Keys: []KeyPair{good}, MaxSize: -1}},
		{"tiny lifetime", "Config.MaxLifetime is 1ms", Config{Ended: ended, Keys: []KeyPair{good}, MaxLifetime: time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v; want an error naming %q", err, tc.want)
			}
		})
	}
	for _, n := range []int{16, 24, 32} {
		if _, err := New(Config{Ended: ended, Keys: []KeyPair{{Hash: randKey(t, 32), Block: randKey(t, n)}}}); err != nil {
			t.Errorf("New with a %d-byte block key: %v", n, err)
		}
	}
}

func TestKeyRotation(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	ended := newEnded(t)
	oldKey, newKey := newKeyPair(t), newKeyPair(t)
	before := newStore(t, Config{Keys: []KeyPair{oldKey}, Ended: ended, Now: clock.Now})
	after := newStore(t, Config{Keys: []KeyPair{newKey, oldKey}, Ended: ended, Now: clock.Now})
	onlyNew := newStore(t, Config{Keys: []KeyPair{newKey}, Ended: ended, Now: clock.Now})

	want := sessiontest.Sample(clock.Now(), 1)
	oldHandle, err := before.Create(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := after.Get(t.Context(), oldHandle)
	if err != nil {
		t.Fatalf("the rotated store does not read a handle made with the old key: %v", err)
	}
	if got.AccessToken != want.AccessToken {
		t.Fatalf("AccessToken = %q", got.AccessToken)
	}
	if _, err := onlyNew.Get(t.Context(), oldHandle); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("a store without the old key read its handle: %v", err)
	}
	newHandle, err := after.Update(t.Context(), oldHandle, func(s *session.Session) error { s.AccessToken = "rotated"; return nil })
	if err != nil {
		t.Fatal(err)
	}
	// The new handle is written with the new key: a store with only that
	// key reads it, a store with only the old one does not.
	if s, err := onlyNew.Get(t.Context(), newHandle); err != nil || s.AccessToken != "rotated" {
		t.Fatalf("Get with the new key only = %+v, %v", s, err)
	}
	if _, err := before.Get(t.Context(), newHandle); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("the updated handle still opens with the old key only: %v", err)
	}
}

func TestNameBinding(t *testing.T) {
	ended, keys := newEnded(t), []KeyPair{newKeyPair(t)}
	a := newStore(t, Config{Keys: keys, Ended: ended})
	b := newStore(t, Config{Keys: keys, Ended: ended, Name: "bffgate-flow"})
	h, err := a.Create(t.Context(), sessiontest.Sample(time.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Get(t.Context(), h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("a handle made under another name was accepted: %v", err)
	}
}

func TestSizeLimit(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	keys, ended := []KeyPair{newKeyPair(t)}, newEnded(t)
	st := newStore(t, Config{Keys: keys, Ended: ended, MaxSize: 4096, Now: clock.Now})
	s := sessiontest.Sample(clock.Now(), 1)
	h, err := st.Create(t.Context(), s)
	if err != nil {
		t.Fatalf("a small session: %v", err)
	}
	big := *s
	big.AccessToken = strings.Repeat("x", 5000)
	_, err = st.Create(t.Context(), &big)
	if !errors.Is(err, session.ErrTooLarge) {
		t.Fatalf("Create of a large session = %v; want session.ErrTooLarge", err)
	}
	if !strings.Contains(err.Error(), "4096") {
		t.Errorf("the error %q does not name the limit", err)
	}
	_, err = st.Update(t.Context(), h, func(s *session.Session) error { s.AccessToken = strings.Repeat("y", 5000); return nil })
	if !errors.Is(err, session.ErrTooLarge) {
		t.Fatalf("Update growing past the limit = %v; want session.ErrTooLarge", err)
	}
	got, err := st.Get(t.Context(), h)
	if err != nil || got.AccessToken != s.AccessToken {
		t.Fatalf("the session changed after a refused Update: %+v, %v", got, err)
	}
	// A handle past the limit (made by a store with a larger one) is no
	// session here.
	lax := newStore(t, Config{Keys: keys, Ended: ended, Now: clock.Now, MaxSize: 1 << 20})
	hBig, err := lax.Create(t.Context(), &big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(t.Context(), hBig); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("Get of a handle past the limit = %v; want session.ErrNotFound", err)
	}
}

func TestLifetimeClamp(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	st := newStore(t, Config{MaxLifetime: time.Hour, Now: clock.Now})
	s := sessiontest.Sample(clock.Now(), 1) // 12 h absolute, more than allowed
	s.IdleTimeout = 0
	h, err := st.Create(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(t.Context(), h)
	if err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(time.Hour); !got.AbsoluteExpiry.Equal(want) {
		t.Errorf("AbsoluteExpiry = %v; want it clamped to %v", got.AbsoluteExpiry, want)
	}
	h, err = st.Update(t.Context(), h, func(s *session.Session) error { s.AbsoluteExpiry = s.AbsoluteExpiry.Add(48 * time.Hour); return nil })
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	if _, err := st.Get(t.Context(), h); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("an Update extended the session past MaxLifetime: %v", err)
	}
}

// TestDeletedCopyRefused: a copy of a logged-out cookie is refused, and
// the record outlives the session.
func TestDeletedCopyRefused(t *testing.T) {
	clock := sessiontest.NewClock(sessiontest.Start())
	ended := newEnded(t)
	st := newStore(t, Config{Ended: ended, Now: clock.Now})
	h, err := st.Create(t.Context(), sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	stolen := strings.Clone(h)
	if err := st.Delete(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Minute)
	if n, err := ended.Sweep(clock.Now()); err != nil || n != 0 {
		t.Fatalf("Sweep removed %d live records: %v", n, err)
	}
	if _, err := st.Get(t.Context(), stolen); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("a copy of a deleted session's cookie = %v; want session.ErrNotFound", err)
	}
}

func TestUnavailableEnded(t *testing.T) {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "bffgate.db"), 0o600, &bbolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st := newStore(t, Config{Ended: sbolt.NewEnded(db)})
	h, err := st.Create(t.Context(), sessiontest.Sample(time.Now(), 1))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := st.Get(t.Context(), h); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Get with the ended store down = %v; want session.ErrUnavailable (503, keep the cookie)", err)
	}
	if err := st.Ping(t.Context()); !errors.Is(err, session.ErrUnavailable) {
		t.Errorf("Ping = %v; want session.ErrUnavailable", err)
	}
}

func FuzzGet(f *testing.F) {
	clock := sessiontest.NewClock(sessiontest.Start())
	st := newStore(f, Config{Now: clock.Now})
	h, err := st.Create(f.Context(), sessiontest.Sample(clock.Now(), 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(h)
	f.Add(h[:len(h)/2])
	f.Add("")
	f.Add(strconv.Itoa(12345) + "|" + h)
	f.Fuzz(func(t *testing.T, handle string) {
		s, err := st.Get(t.Context(), handle)
		if handle == h {
			return
		}
		if err == nil {
			t.Fatalf("Get accepted a handle it never made: %+v", s)
		}
		if !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get = %v; want session.ErrNotFound", err)
		}
	})
}
