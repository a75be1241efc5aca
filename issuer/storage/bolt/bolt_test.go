package bolt

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/storagetest"
)

func newTestStore(t *testing.T) (*Store, *bolt.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "bffgate.db")
	db, err := datafile.Open(path, time.Second)
	if err != nil {
		t.Fatalf("OpenDB: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := New(db, Config{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, db, path
}

func TestStore(t *testing.T) {
	storagetest.RunStoreTests(t, func(t *testing.T) storage.Store {
		s, _, _ := newTestStore(t)
		return s
	})
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	_, db, _ := newTestStore(t)
	if _, err := New(nil, Config{}); err == nil {
		t.Error("New(nil db) succeeded")
	}
	if _, err := New(db, Config{PurgeBatch: -1}); err == nil || !strings.Contains(err.Error(), "PurgeBatch") {
		t.Errorf("New with negative PurgeBatch = %v, want an error naming the field", err)
	}
	// Two stores with different prefixes share a file without seeing each
	// other's records.
	a, _ := New(db, Config{BucketPrefix: "a."})
	b, _ := New(db, Config{BucketPrefix: "b."})
	ctx := context.Background()
	if err := a.RevokeAccessToken(ctx, "j", "", time.Now().Add(time.Hour), time.Now()); err != nil {
		t.Fatal(err)
	}
	if d, _ := b.Denied(ctx, storage.DenyJTI, "j"); d {
		t.Error("store b sees store a's denylist entry")
	}
}

func TestClosedDBIsUnavailable(t *testing.T) {
	t.Parallel()
	s, db, _ := newTestStore(t)
	db.Close()
	if err := s.Ping(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Ping on a closed db = %v, want ErrUnavailable", err)
	}
	if _, err := s.Denied(context.Background(), storage.DenyJTI, "x"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("Denied on a closed db = %v, want ErrUnavailable", err)
	}
}

func TestCanceledContext(t *testing.T) {
	t.Parallel()
	s, _, _ := newTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Denied(ctx, storage.DenyJTI, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Denied with canceled ctx = %v", err)
	}
}

// TestReopen checks that a Store on a reopened file (a restart) finds
// everything the previous one stored.
func TestReopen(t *testing.T) {
	t.Parallel()
	s, db, path := newTestStore(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	exp := now.Add(time.Hour)
	if err := s.UpdateKeys(ctx, func([]storage.Key) ([]storage.Key, error) {
		return []storage.Key{{ID: "k", Alg: "ES256", Use: "sig", Private: []byte(`{}`), Active: true, Created: now}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	secret, err := s.Secret(ctx, "cookie", func() ([]byte, error) { return []byte("s3cret"), nil })
	if err != nil {
		t.Fatal(err)
	}
	code := storage.AuthCode{Hash: "h", ClientID: "c", SID: "sid", ExpiresAt: exp}
	if err := s.CreateCode(ctx, code); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RedeemCode(ctx, "h", now, func(c storage.AuthCode) (storage.Issued, error) {
		return storage.Issued{
			Grant:   &storage.Grant{ID: "g", SID: "sid", ExpiresAt: exp},
			Refresh: &storage.RefreshToken{JTI: "r", GrantID: "g", ExpiresAt: exp},
		}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, "at", "", exp, now); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateLoginSession(ctx, storage.LoginSession{ID: "ls", ExpiresAt: exp}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db2, err := datafile.Open(path, time.Second)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer db2.Close()
	s2, err := New(db2, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := s2.Keys(ctx); err != nil || len(keys) != 1 || keys[0].ID != "k" {
		t.Errorf("Keys after reopen = %v, %v", keys, err)
	}
	if got, err := s2.Secret(ctx, "cookie", func() ([]byte, error) { return []byte("other"), nil }); err != nil || string(got) != string(secret) {
		t.Errorf("Secret after reopen = %q, %v; want the stored one", got, err)
	}
	if _, err := s2.RedeemCode(ctx, "h", now, nil); !errors.Is(err, storage.ErrCodeReused) {
		t.Errorf("RedeemCode after reopen = %v, want ErrCodeReused", err)
	}
	if _, err := s2.RefreshToken(ctx, "r"); err != nil {
		t.Errorf("RefreshToken after reopen: %v", err)
	}
	if d, err := s2.Denied(ctx, storage.DenyJTI, "at"); err != nil || !d {
		t.Errorf("Denied after reopen = %v, %v", d, err)
	}
	if _, err := s2.LoginSession(ctx, "ls"); err != nil {
		t.Errorf("LoginSession after reopen: %v", err)
	}
	if ch, _, err := s2.DenylistChanges(ctx, 0, 0); err != nil || len(ch) != 1 {
		t.Errorf("DenylistChanges after reopen = %v, %v", ch, err)
	}
	// The change-log sequence continues after a restart, so cursors held
	// by other instances stay valid.
	_, c1, _ := s2.DenylistChanges(ctx, 0, 0)
	if err := s2.RevokeAccessToken(ctx, "at2", "", exp, now); err != nil {
		t.Fatal(err)
	}
	if ch, c2, err := s2.DenylistChanges(ctx, c1, 0); err != nil || len(ch) != 1 || ch[0].ID != "at2" || c2 <= c1 {
		t.Errorf("DenylistChanges after cursor %d = %v, %d, %v", c1, ch, c2, err)
	}
}

// The kill -9 test: a child process (this test binary, re-executed with
// BOLT_CHILD=1) writes rotations and revocations in a loop and prints each
// committed revocation; the parent kills it with SIGKILL at a random
// moment and checks the file.
const childEnv = "BOLT_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := runChild(os.Getenv("BOLT_CHILD_PATH"), os.Getenv("BOLT_CHILD_ROUND")); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild writes until killed. Each line it prints names a change that
// db.Update has committed (and fsynced) before the print.
func runChild(path, round string) error {
	db, err := datafile.Open(path, 5*time.Second)
	if err != nil {
		return err
	}
	s, err := New(db, Config{})
	if err != nil {
		return err
	}
	ctx := context.Background()
	now := time.Now()
	exp := now.Add(time.Hour)
	out := os.Stdout
	fmt.Fprintln(out, "ready")
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s-%d", round, i)
		code := storage.AuthCode{Hash: "code-" + id, ClientID: "c", SID: "sid-" + id, ExpiresAt: exp}
		if err := s.CreateCode(ctx, code); err != nil {
			return err
		}
		jti := "r-" + id + "-0"
		if _, err := s.RedeemCode(ctx, code.Hash, now, func(c storage.AuthCode) (storage.Issued, error) {
			return storage.Issued{
				Grant:   &storage.Grant{ID: "g-" + id, SID: c.SID, ExpiresAt: exp, Claims: []byte(`{"n":1}`)},
				Refresh: &storage.RefreshToken{JTI: jti, GrantID: "g-" + id, SID: c.SID, ExpiresAt: exp},
			}, nil
		}); err != nil {
			return err
		}
		for k := 1; k <= 3; k++ {
			next := fmt.Sprintf("r-%s-%d", id, k)
			if err := s.RotateRefresh(ctx, jti, true, now, func(old storage.RefreshToken) (storage.Issued, error) {
				r := old
				r.JTI = next
				return storage.Issued{Refresh: &r}, nil
			}); err != nil {
				return err
			}
			fmt.Fprintln(out, "rotated", jti)
			jti = next
		}
		switch i % 3 {
		case 0:
			if err := s.RevokeGrant(ctx, "g-"+id, exp, now); err != nil {
				return err
			}
			fmt.Fprintln(out, "grant", "g-"+id)
		case 1:
			if err := s.RevokeAccessToken(ctx, "at-"+id, "g-"+id, exp, now); err != nil {
				return err
			}
			fmt.Fprintln(out, "jti", "at-"+id)
		case 2:
			if _, err := s.RevokeSID(ctx, "sid-"+id, exp, now); err != nil {
				return err
			}
			fmt.Fprintln(out, "grant", "g-"+id)
		}
	}
}

func TestKill9Durability(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test re-executes the test binary; skipped in -short")
	}
	path := filepath.Join(t.TempDir(), "bffgate.db")
	type revoked struct{ kind, id string }
	var all []revoked
	var rotatedAway []string
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", "BOLT_CHILD_PATH="+path, "BOLT_CHILD_ROUND="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || sc.Text() != "ready" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("round %d: child did not start (%v)", round, sc.Err())
		}
		// Kill at a random moment, mid-write most likely.
		delay := time.Duration(50+rand.IntN(250)) * time.Millisecond
		timer := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 2 {
				continue // a line cut by the kill
			}
			switch f[0] {
			case "rotated":
				rotatedAway = append(rotatedAway, f[1])
			default:
				all = append(all, revoked{f[0], f[1]})
			}
		}
		timer.Stop()
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("round %d: child ended with %v, want killed by SIGKILL", round, err)
		}
		t.Logf("round %d: killed after %v; %d revocations, %d rotations reported so far", round, delay, len(all), len(rotatedAway))

		db, err := datafile.Open(path, 5*time.Second)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		s, err := New(db, Config{})
		if err != nil {
			db.Close()
			t.Fatal(err)
		}
		checkConsistent(t, s, db)
		ctx := context.Background()
		for _, r := range all {
			d, err := s.Denied(ctx, storage.DenyKind(r.kind), r.id)
			if err != nil || !d {
				t.Errorf("round %d: reported revocation %s %s is not on the denylist (%v)", round, r.kind, r.id, err)
			}
		}
		for _, jti := range rotatedAway {
			if _, err := s.RefreshToken(ctx, jti); !errors.Is(err, storage.ErrNotFound) {
				t.Errorf("round %d: rotated-away token %s is still allowlisted (%v)", round, jti, err)
			}
		}
		db.Close()
	}
	if len(all) == 0 {
		t.Fatal("the children reported no revocation; the test proved nothing")
	}
}

// checkConsistent runs bbolt's own page check and verifies the Store's
// invariants: every record decodes, every allowlist record's grant exists
// and is indexed, every index entry points at a record.
func checkConsistent(t *testing.T, s *Store, db *bolt.DB) {
	t.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return fmt.Errorf("bbolt check: %w", err)
		}
		tt := s.engine.wrap(tx)
		if err := tt.b.refresh.ForEach(func(k, v []byte) error {
			var r storage.RefreshToken
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("refresh record %s does not decode: %w", k, err)
			}
			if r.JTI != string(k) {
				return fmt.Errorf("refresh record %s holds jti %s", k, r.JTI)
			}
			if tt.b.grants.Get([]byte(r.GrantID)) == nil {
				return fmt.Errorf("refresh record %s names missing grant %s", k, r.GrantID)
			}
			if tt.b.grantRefresh.Get(indexKey(r.GrantID, r.JTI)) == nil {
				return fmt.Errorf("refresh record %s is missing from its grant's index", k)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tt.b.grants.ForEach(func(k, v []byte) error {
			var g storage.Grant
			if err := json.Unmarshal(v, &g); err != nil {
				return fmt.Errorf("grant %s does not decode: %w", k, err)
			}
			return nil
		}); err != nil {
			return err
		}
		if err := tt.b.grantRefresh.ForEach(func(k, _ []byte) error {
			n := int(k[0])<<8 | int(k[1])
			if tt.b.refresh.Get(k[2+n:]) == nil {
				return fmt.Errorf("grant index entry %q points at no refresh record", k)
			}
			return nil
		}); err != nil {
			return err
		}
		return tt.b.denylog.ForEach(func(k, v []byte) error {
			if _, err := decodeLogEntry(v); err != nil {
				return fmt.Errorf("denylog %x: %w", k, err)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// FuzzDecodeLogEntry: the log decoder never panics and round-trips what
// the encoder writes.
func FuzzDecodeLogEntry(f *testing.F) {
	f.Add([]byte{}, "jti", "id")
	f.Add(encodeLogEntry(storage.DenyEntry{Kind: storage.DenyGrant, ID: "g", Until: time.Unix(1e9, 0)}), "grant", "")
	f.Fuzz(func(t *testing.T, raw []byte, kind, id string) {
		decodeLogEntry(raw)
		if strings.IndexByte(kind, 0) >= 0 || kind == "" {
			return
		}
		e := storage.DenyEntry{Kind: storage.DenyKind(kind), ID: id, Until: time.Unix(0, rand.Int64()).UTC()}
		got, err := decodeLogEntry(encodeLogEntry(e))
		if err != nil || got.Kind != e.Kind || got.ID != e.ID || !got.Until.Equal(e.Until) {
			t.Fatalf("round trip of %+v = %+v, %v", e, got, err)
		}
	})
}

// TestLoginFailuresPurge: bbolt has no TTLs, so Purge removes expired
// login-throttle records and their expiry-index entries, counting them, and
// keeps the index in step when a record's expiry moves.
func TestLoginFailuresPurge(t *testing.T) {
	t.Parallel()
	s, db, _ := newTestStore(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	p := storage.LoginPolicy{MaxFailures: 2, Window: 10 * time.Minute, Lockout: time.Minute, MaxLockout: time.Hour}
	for range 2 { // the second locks: the expiry moves to the lock's end plus Window
		if _, err := s.RecordLoginFailure(ctx, "u:k", now, p); err != nil {
			t.Fatal(err)
		}
	}
	count := func(bucket []byte) int {
		n := 0
		if err := db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(bucket).ForEach(func(k, v []byte) error { n++; return nil })
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if r, x := count(s.engine.names.LoginFailures), count(s.engine.names.Expiry); r != 1 || x != 1 {
		t.Fatalf("after two failures: %d records, %d expiry entries; want 1 and 1", r, x)
	}
	if n, err := s.Purge(ctx, now.Add(10*time.Minute)); err != nil || n != 0 {
		t.Fatalf("Purge before the expiry = %d, %v; want 0 (the lock ends at +1m, the state at +11m)", n, err)
	}
	if n, err := s.Purge(ctx, now.Add(11*time.Minute)); err != nil || n != 1 {
		t.Fatalf("Purge at the expiry = %d, %v; want 1", n, err)
	}
	if r, x := count(s.engine.names.LoginFailures), count(s.engine.names.Expiry); r != 0 || x != 0 {
		t.Fatalf("after Purge: %d records, %d expiry entries; want none", r, x)
	}
}

// TestNanosLimit: times up to the int64 limit (2262-04-11) round-trip
// exactly, later ones clamp to it. FuzzDecodeLogEntry draws random times
// and failed on one early in 2262 when the clamp started at the year.
func TestNanosLimit(t *testing.T) {
	t.Parallel()
	for _, n := range []int64{0, 1, 1e18, 9214646400000000000 /* 2262-01-01 */, math.MaxInt64 - 1, math.MaxInt64} {
		tm := time.Unix(0, n).UTC()
		if got := fromNanos(nanos(tm)); !got.Equal(tm) {
			t.Errorf("round trip of %v = %v", tm, got)
		}
	}
	for _, tm := range []time.Time{time.Unix(0, math.MaxInt64).Add(time.Nanosecond), time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if got := nanos(tm); got != math.MaxInt64 {
			t.Errorf("nanos(%v) = %d, want the clamp %d", tm, got, int64(math.MaxInt64))
		}
	}
}
