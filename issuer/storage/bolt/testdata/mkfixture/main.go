//go:build ignore

// mkfixture wrote testdata/release1.db with the
// issuer's bolt store of commit 33c895a, the last before the storage
// engines: go run ./cmd/mkfixture FILE in a checkout of it.
package main

import (
	"context"
	"log"
	"os"
	"time"

	"github.com/bffgate/bffgate/issuer/storage"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
)

func main() {
	path := os.Args[1]
	db, err := bolt.OpenDB(path, time.Second)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	s, err := bolt.New(db, bolt.Config{})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	must := func(err error) {
		if err != nil {
			log.Fatal(err)
		}
	}
	must(s.UpdateKeys(ctx, func([]storage.Key) ([]storage.Key, error) {
		return []storage.Key{{ID: "k1", Alg: "ES256", Use: "sig", Private: []byte(`{"kty":"EC"}`), Active: true, Created: now}}, nil
	}))
	_, err = s.Secret(ctx, "client", func() ([]byte, error) { return []byte("s3cret"), nil })
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
