package bolt

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer/storage"
)

// TestReleaseFixture opens a data file written by the bolt store of the
// release before the storage engines (testdata/release1.db, made by
// testdata/mkfixture at commit 33c895a) and checks that every record of
// it reads, changes and purges under the rules on the bbolt engine: the
// bucket names and key encodings did not move.
func TestReleaseFixture(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile(filepath.Join("testdata", "release1.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "bffgate.db")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := datafile.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s, err := New(db, Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

	keys, err := s.Keys(ctx)
	if err != nil || len(keys) != 1 || keys[0].ID != "k1" || !keys[0].Active {
		t.Errorf("Keys = %+v, %v; want the active key k1", keys, err)
	}
	sec, err := s.Secret(ctx, "client", func() ([]byte, error) { return nil, errors.New("generated anew") })
	if err != nil || string(sec) != "s3cret" {
		t.Errorf("Secret = %q, %v; want the stored one", sec, err)
	}
	var reused *storage.CodeReusedError
	if _, err := s.RedeemCode(ctx, "used", now, nil); !errors.As(err, &reused) || reused.Code.RedeemedGrant != "g1" {
		t.Errorf("replay of the redeemed code = %v; want a CodeReusedError naming g1", err)
	}
	if _, err := s.RedeemCode(ctx, "fresh", now, func(c storage.AuthCode) (storage.Issued, error) {
		return storage.Issued{
			Grant:   &storage.Grant{ID: "g3", ClientID: c.ClientID, Subject: c.Subject, SID: c.SID, ExpiresAt: exp},
			Refresh: &storage.RefreshToken{JTI: "r3", GrantID: "g3", ExpiresAt: exp},
		}, nil
	}); err != nil {
		t.Errorf("redeeming the stored fresh code: %v", err)
	}
	if err := s.RotateRefresh(ctx, "r1", true, now, func(rt storage.RefreshToken) (storage.Issued, error) {
		return storage.Issued{Refresh: &storage.RefreshToken{JTI: "r1b", GrantID: rt.GrantID, ExpiresAt: exp}}, nil
	}); err != nil {
		t.Errorf("rotating the stored refresh token: %v", err)
	}
	if _, err := s.RefreshToken(ctx, "r2"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("refresh token of the revoked grant = %v; want ErrNotFound", err)
	}
	for _, d := range []struct {
		kind storage.DenyKind
		id   string
	}{{storage.DenyGrant, "g2"}, {storage.DenyJTI, "at1"}} {
		if ok, err := s.Denied(ctx, d.kind, d.id); err != nil || !ok {
			t.Errorf("Denied(%s %s) = %v, %v; want true", d.kind, d.id, ok, err)
		}
	}
	log, cur, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil || len(log) != 2 || log[0].ID != "g2" || log[1].ID != "at1" || cur != 2 || !log[0].Until.Equal(exp) {
		t.Errorf("DenylistChanges = %+v, %d, %v; want g2 then at1, cursor 2", log, cur, err)
	}
	// Both stored grants of sid1 (g1 from the file, g3 from above) go.
	ids, err := s.RevokeSID(ctx, "sid1", exp, now)
	if err != nil || !slices.Equal(ids, []string{"g1", "g3"}) {
		t.Errorf("RevokeSID(sid1) = %v, %v; want [g1 g3]", ids, err)
	}
	if _, cur, _ := s.DenylistChanges(ctx, 0, 0); cur != 4 {
		t.Errorf("the change log continues at cursor %d; want 4 (after the file's 2)", cur)
	}
	if ls, err := s.LoginSession(ctx, "ls1"); err != nil || ls.Subject != "alice" {
		t.Errorf("LoginSession = %+v, %v", ls, err)
	}
	if f, err := s.LoginFailures(ctx, "u:alice", now); err != nil || f.Count != 2 {
		t.Errorf("LoginFailures = %+v, %v; want the file's count 2", f, err)
	}
	// Far past every expiry, Purge empties the file's records and the
	// expiry index (every entry of the old file was found and understood).
	if _, err := s.Purge(ctx, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatalf("Purge: %v", err)
	}
	n := 0
	if err := s.engine.View(ctx, func(tx storage.Tx) error {
		d, err := tx.Due(time.Date(2262, 1, 1, 0, 0, 0, 0, time.UTC), 0)
		n = len(d)
		return err
	}); err != nil || n != 0 {
		t.Errorf("after Purge the expiry index holds %d entries, %v; want none", n, err)
	}
	checkConsistent(t, s, db)
}
