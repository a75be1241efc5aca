//go:build ignore

// mkfixture wrote testdata/release1.db and testdata/release1.json (the
// handles of its sessions) with the session bbolt store of commit 82e5328,
// the last before the shared ticket rules and internal/datafile:
// go run session/bolt/testdata/mkfixture/main.go session/bolt/testdata in a
// checkout of it.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"path/filepath"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/session"
	sbolt "github.com/bffgate/bffgate/session/bolt"
)

func main() {
	dir := os.Args[1]
	db, err := bbolt.Open(filepath.Join(dir, "release1.db"), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st, err := sbolt.New(db, sbolt.Config{Now: func() time.Time { return now }})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	sess := func(n, sid, sub string, abs time.Time) *session.Session {
		return &session.Session{
			Subject: sub, SID: sid, Issuer: "https://issuer.example/",
			Claims:  []byte(`{"sub":"` + sub + `","name":"Fixture ` + n + `"}`),
			IDToken: "id-token-" + n, AccessToken: "access-token-" + n, RefreshToken: "refresh-token-" + n,
			TokenType: "Bearer", AccessExpiry: now.Add(5 * time.Minute),
			Created: now, LastSeen: now, IdleTimeout: 0, AbsoluteExpiry: abs, Version: 3,
		}
	}
	far := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	handles := map[string]string{}
	for _, c := range []struct {
		name, sid, sub string
		abs            time.Time
	}{
		{"alice1", "sid-a", "alice", far},
		{"alice2", "sid-a2", "alice", far},
		{"bob", "sid-b", "bob", far},
		{"carol", "sid-c", "carol", far},
		{"short", "sid-s", "dave", now.Add(time.Hour)}, // expired at the test's clock
	} {
		h, err := st.Create(ctx, sess(c.name, c.sid, c.sub, c.abs))
		if err != nil {
			log.Fatal(err)
		}
		handles[c.name] = h
	}
	if _, err := st.Update(ctx, handles["carol"], func(s *session.Session) error {
		s.AccessToken = "access-token-carol-2"
		return nil
	}); err != nil {
		log.Fatal(err)
	}
	e := sbolt.NewEnded(db)
	if err := e.EndSID(ctx, "ended-sid", far); err != nil {
		log.Fatal(err)
	}
	if err := e.EndSubject(ctx, "ended-sub", now, far); err != nil {
		log.Fatal(err)
	}
	b, _ := json.MarshalIndent(handles, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "release1.json"), append(b, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
}
