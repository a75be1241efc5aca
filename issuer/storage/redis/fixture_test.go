package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer/storage"
)

// The release fixture: testdata/release1.json is every key that the Redis
// store of the release before the storage engines (ops.go, commit 82e5328)
// wrote for the state writeRelease1 makes, with its type, value and
// absolute expiry. It was written by
//
//	BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 BFFGATE_WRITE_REDIS_FIXTURE=1 \
//	  go test -run TestWriteReleaseFixture ./issuer/storage/redis/
//
// at that commit. TestReleaseFixture loads it under a fresh prefix and
// works on it with the current code; TestReleaseFixtureWrites checks that
// the current code writes the very same keys for the same calls.

var (
	fixtureNow = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	fixtureExp = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
)

// writeRelease1 makes the fixture's state: keys, a secret, a fresh and a
// redeemed code, a grant with a refresh token, a revoked grant, a
// denylisted access token (the change log), a login session and the
// throttle state of one key.
func writeRelease1(t *testing.T, s storage.Store) {
	t.Helper()
	ctx := context.Background()
	now, exp := fixtureNow, fixtureExp
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.UpdateKeys(ctx, func([]storage.Key) ([]storage.Key, error) {
		return []storage.Key{{ID: "k1", Alg: "ES256", Use: "sig", Private: []byte(`{"kty":"EC"}`), Active: true, Created: now}}, nil
	}))
	_, err := s.Secret(ctx, "client", func() ([]byte, error) { return []byte("s3cret"), nil })
	must(err)
	code := func(h, sid string) storage.AuthCode {
		return storage.AuthCode{Hash: h, ClientID: "app", RedirectURI: "https://app/cb", Scope: "openid", Subject: "alice", SID: sid, AuthTime: now, ExpiresAt: exp}
	}
	must(s.CreateCode(ctx, code("fresh", "sid1")))
	must(s.CreateCode(ctx, code("used", "sid1")))
	mint := func(gid, jti string) func(storage.AuthCode) (storage.Issued, error) {
		return func(c storage.AuthCode) (storage.Issued, error) {
			return storage.Issued{
				Grant:   &storage.Grant{ID: gid, ClientID: c.ClientID, Subject: c.Subject, SID: c.SID, Scope: c.Scope, AuthTime: now, Created: now, ExpiresAt: exp},
				Refresh: &storage.RefreshToken{JTI: jti, GrantID: gid, ClientID: c.ClientID, Subject: c.Subject, SID: c.SID, Scope: c.Scope, IssuedAt: now, ExpiresAt: exp},
			}, nil
		}
	}
	_, err = s.RedeemCode(ctx, "used", now, mint("g1", "r1"))
	must(err)
	must(s.CreateCode(ctx, code("used2", "sid2")))
	_, err = s.RedeemCode(ctx, "used2", now, mint("g2", "r2"))
	must(err)
	must(s.RevokeGrant(ctx, "g2", exp, now))
	must(s.RevokeAccessToken(ctx, "at1", "", exp, now))
	must(s.CreateLoginSession(ctx, storage.LoginSession{ID: "ls1", Subject: "alice", AuthTime: now, ExpiresAt: exp}))
	p := storage.LoginPolicy{MaxFailures: 5, Window: 24 * time.Hour * 365 * 80, Lockout: time.Minute, MaxLockout: time.Hour}
	_, err = s.RecordLoginFailure(ctx, "u:alice", now, p)
	must(err)
	_, err = s.RecordLoginFailure(ctx, "u:alice", now, p)
	must(err)
}

// dumpedKey is one Redis key of a dump, its name without the prefix.
type dumpedKey struct {
	Key      string            `json:"key"`
	Type     string            `json:"type"`
	String   *string           `json:"string,omitempty"`
	Set      []string          `json:"set,omitempty"`
	ZSet     []goredis.Z       `json:"zset,omitempty"`
	Hash     map[string]string `json:"hash,omitempty"`
	ExpireAt int64             `json:"expire_at_ms"` // PEXPIRETIME; -1: none
}

// dump reads every key under prefix.
func dump(ctx context.Context, c goredis.UniversalClient, prefix string) ([]dumpedKey, error) {
	var names []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		names = append(names, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []dumpedKey
	for _, name := range names {
		d := dumpedKey{Key: strings.TrimPrefix(name, prefix)}
		var err error
		if d.Type, err = c.Type(ctx, name).Result(); err != nil {
			return nil, err
		}
		switch d.Type {
		case "string":
			v, err := c.Get(ctx, name).Result()
			if err != nil {
				return nil, err
			}
			if !utf8.ValidString(v) {
				return nil, fmt.Errorf("%s holds bytes that are not UTF-8; the dump keeps text only", name)
			}
			d.String = &v
		case "set":
			if d.Set, err = c.SMembers(ctx, name).Result(); err != nil {
				return nil, err
			}
			slices.Sort(d.Set)
		case "zset":
			if d.ZSet, err = c.ZRangeWithScores(ctx, name, 0, -1).Result(); err != nil {
				return nil, err
			}
		case "hash":
			if d.Hash, err = c.HGetAll(ctx, name).Result(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%s is a %s, which the dump does not know", name, d.Type)
		}
		if d.ExpireAt, err = c.Do(ctx, "pexpiretime", name).Int64(); err != nil {
			return nil, err
		}
		if d.ExpireAt < 0 {
			d.ExpireAt = -1
		}
		out = append(out, d)
	}
	return out, nil
}

// load writes keys under prefix, with their expiry.
func load(ctx context.Context, c goredis.UniversalClient, prefix string, keys []dumpedKey) error {
	for _, d := range keys {
		name := prefix + d.Key
		var err error
		switch d.Type {
		case "string":
			err = c.Set(ctx, name, *d.String, 0).Err()
		case "set":
			err = c.SAdd(ctx, name, anys(d.Set)...).Err()
		case "zset":
			err = c.ZAdd(ctx, name, d.ZSet...).Err()
		case "hash":
			err = c.HSet(ctx, name, d.Hash).Err()
		default:
			err = fmt.Errorf("unknown type %q", d.Type)
		}
		if err == nil && d.ExpireAt > 0 {
			err = c.PExpireAt(ctx, name, time.UnixMilli(d.ExpireAt)).Err()
		}
		if err != nil {
			return fmt.Errorf("load %s: %w", d.Key, err)
		}
	}
	return nil
}

func readFixture(t *testing.T) []dumpedKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "release1.json"))
	if err != nil {
		t.Fatal(err)
	}
	var keys []dumpedKey
	if err := json.Unmarshal(data, &keys); err != nil {
		t.Fatalf("testdata/release1.json: %v", err)
	}
	return keys
}

func newFixtureStore(t *testing.T) (*Store, goredis.UniversalClient, string) {
	t.Helper()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	s, err := New(c, Config{Prefix: prefix, Now: func() time.Time { return fixtureNow }})
	if err != nil {
		t.Fatal(err)
	}
	return s, c, prefix
}

// TestWriteReleaseFixture writes testdata/release1.json when
// BFFGATE_WRITE_REDIS_FIXTURE is set (see above); it is kept to document
// how the fixture was made.
func TestWriteReleaseFixture(t *testing.T) {
	if os.Getenv("BFFGATE_WRITE_REDIS_FIXTURE") == "" {
		t.Skip("set BFFGATE_WRITE_REDIS_FIXTURE=1 to rewrite testdata/release1.json")
	}
	s, c, prefix := newFixtureStore(t)
	writeRelease1(t, s)
	keys, err := dump(context.Background(), c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.MarshalIndent(keys, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", "release1.json"), append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReleaseFixtureWrites: the current code writes, for writeRelease1's
// calls, exactly the keys, types, values and expiries that the release
// wrote, so that an older instance sharing the Redis during a rolling
// upgrade reads them too.
func TestReleaseFixtureWrites(t *testing.T) {
	t.Parallel()
	want := readFixture(t)
	s, c, prefix := newFixtureStore(t)
	writeRelease1(t, s)
	got, err := dump(context.Background(), c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Errorf("the current code writes\n%s\nthe release wrote testdata/release1.json", g)
	}
}

// TestReleaseFixture loads the keys the release wrote into a fresh prefix
// and redeems, rotates, revokes and purges on them with the current code.
func TestReleaseFixture(t *testing.T) {
	t.Parallel()
	s, c, prefix := newFixtureStore(t)
	ctx := context.Background()
	if err := load(ctx, c, prefix, readFixture(t)); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)
	exp := fixtureExp

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
	if _, err := s.RefreshToken(ctx, "r1"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("rotated-away refresh token = %v; want ErrNotFound", err)
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
	first := storage.Cursor(fixtureNow.UnixMilli() * 1000)
	log, cur, err := s.DenylistChanges(ctx, 0, 0)
	if err != nil || len(log) != 2 || log[0].ID != "g2" || log[1].ID != "at1" || cur != first+1 || !log[0].Until.Equal(exp) {
		t.Errorf("DenylistChanges = %+v, %d, %v; want g2 then at1, cursor %d", log, cur, err, first+1)
	}
	// Both stored grants of sid1 (g1 from the fixture, g3 from above) go.
	ids, err := s.RevokeSID(ctx, "sid1", exp, now)
	if err != nil || !slices.Equal(ids, []string{"g1", "g3"}) {
		t.Errorf("RevokeSID(sid1) = %v, %v; want [g1 g3]", ids, err)
	}
	if _, err := s.RefreshToken(ctx, "r1b"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("refresh token of a grant revoked by sid = %v; want ErrNotFound", err)
	}
	if got, cur2, _ := s.DenylistChanges(ctx, cur, 0); len(got) != 2 || cur2 != first+3 {
		t.Errorf("the change log continues with %+v at cursor %d; want two entries up to %d", got, cur2, first+3)
	}
	if ls, err := s.LoginSession(ctx, "ls1"); err != nil || ls.Subject != "alice" {
		t.Errorf("LoginSession = %+v, %v", ls, err)
	}
	if f, err := s.LoginFailures(ctx, "u:alice", now); err != nil || f.Count != 2 {
		t.Errorf("LoginFailures = %+v, %v; want the fixture's count 2", f, err)
	}
	// Far past every expiry, Purge empties the expiry index: every entry
	// of the fixture was found and understood.
	n, err := s.Purge(ctx, time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("Purge: %v", err)
	}
	if n == 0 {
		t.Error("Purge removed nothing")
	}
	left, err := dump(ctx, c, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range left {
		names = append(names, d.Key)
	}
	// What stays: the keys and the secret (they never expire), the change
	// log's counter, and the throttle state (its own TTL removes it).
	want := []string{"{issuer}:denyseq", "{issuer}:keys", "{issuer}:login-failures:u:alice", "{issuer}:secret:client"}
	if !slices.Equal(names, want) {
		t.Errorf("after Purge the prefix holds %q; want %q", names, want)
	}
}
