package keys_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
)

// TestRestartOnBoltFile runs Open, Rotate and Reload on a real bbolt file,
// closing and reopening it as a restart does.
func TestRestartOnBoltFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "bffgate.db")
	cfg := keys.Config{Algorithms: []string{"ES256", "HS256"}, Encryption: "A128CBC-HS256"}

	open := func() (*keys.Set, func()) {
		t.Helper()
		db, err := datafile.Open(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		st, err := bolt.New(db, bolt.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Store = st
		s, err := keys.Open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		return s, func() { db.Close() }
	}

	s1, closeDB := open()
	es1, _ := s1.ActiveKID("ES256")
	hs1, _ := s1.ActiveKID("HS256")
	dir1, key1, _, _ := s1.Encryption()
	closeDB()

	s2, closeDB := open()
	es2, _ := s2.ActiveKID("ES256")
	hs2, _ := s2.ActiveKID("HS256")
	dir2, key2, _, _ := s2.Encryption()
	if es1 != es2 || hs1 != hs2 || dir1 != dir2 || string(key1) != string(key2) {
		t.Fatal("keys changed across a restart on the same bbolt file")
	}
	closeDB()

	// The CLI rotates while the file is closed; the next start signs with
	// the new key and still verifies with the old.
	db, err := datafile.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := bolt.New(db, bolt.DefaultConfig())
	newKID, err := keys.Rotate(ctx, st, "ES256", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s3, closeDB := open()
	defer closeDB()
	if kid, _ := s3.ActiveKID("ES256"); kid != newKID {
		t.Fatal("rotation not persisted")
	}
	if _, _, ok := s3.VerificationKey(es1); !ok {
		t.Fatal("the retired key does not verify after restart")
	}
	if n := len(s3.PublicJWKS().Keys); n != 2 {
		t.Fatalf("JWKS has %d keys, want the active and the retired ES256 key", n)
	}
}
