package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	issuerbolt "github.com/bffgate/bffgate/issuer/storage/bolt"
)

// TestConsentsRevoke: bffgate consents revoke forgets a user's consent to
// a third-party client in the data file, and only that one.
func TestConsentsRevoke(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A first command creates the data file.
	if code, _, errOut := runCmd(t, "", "consents", "revoke", "demo", "https://c.example.test/m.json", "--data-dir", dir); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	const client, other = "https://c.example.test/m.json", "dyn_other"
	now := time.Now()
	withStore := func(fn func(st *issuerbolt.Store)) {
		db, err := datafile.Open(filepath.Join(dir, dataFile), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		st, err := issuerbolt.New(db, issuerbolt.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		fn(st)
	}
	ctx := context.Background()
	withStore(func(st *issuerbolt.Store) {
		for _, c := range []string{client, other} {
			if err := st.AddConsent(ctx, "demo", c, "", []string{"openid"}, now, now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
	})
	code, out, errOut := runCmd(t, "", "consents", "revoke", "demo", client, "--data-dir", dir)
	if code != 0 || !strings.Contains(out, "forgotten") {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	withStore(func(st *issuerbolt.Store) {
		if c, _ := st.Consent(ctx, "demo", client, now); c.Covers("", []string{"openid"}) {
			t.Error("the consent is still there")
		}
		if c, _ := st.Consent(ctx, "demo", other, now); !c.Covers("", []string{"openid"}) {
			t.Error("the other client's consent was forgotten too")
		}
	})
	if code, _, _ := runCmd(t, "", "consents", "revoke", "demo", "--data-dir", dir); code != 2 {
		t.Errorf("one argument: exit %d, want 2", code)
	}
}
