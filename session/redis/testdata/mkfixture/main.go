//go:build ignore

// mkfixture wrote testdata/release1.json with the session Redis store of
// commit 82e5328, the last before the shared ticket rules: it stores
// sessions and ended records under a fresh prefix of the Redis at $1 and
// dumps every key (type, value or sorted-set members, expiry) with the
// handles of the sessions. go run session/redis/testdata/mkfixture/main.go
// redis://127.0.0.1:6379/0 session/redis/testdata/release1.json in a
// checkout of it.
package main

import (
	"context"
	"encoding/json"
	"log"
	"os"
	"slices"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/session"
	sredis "github.com/bffgate/bffgate/session/redis"
)

// Key is one dumped key, its name without the prefix.
type Key struct {
	Name    string             `json:"name"`
	Type    string             `json:"type"`
	Value   []byte             `json:"value,omitempty"`
	Members map[string]float64 `json:"members,omitempty"`
	// ExpireAtMS is the PEXPIRETIME (0: none).
	ExpireAtMS int64 `json:"expire_at_ms"`
}

type Fixture struct {
	Handles map[string]string `json:"handles"`
	Keys    []Key             `json:"keys"`
}

func main() {
	opt, err := goredis.ParseURL(os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	rdb := goredis.NewClient(opt)
	defer rdb.Close()
	ctx := context.Background()
	prefix := "bffgate-fixture:" + time.Now().Format("150405.000") + ":"
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	st, err := sredis.New(rdb, sredis.Config{Prefix: prefix, Now: func() time.Time { return now }})
	if err != nil {
		log.Fatal(err)
	}
	far := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
	sess := func(n, sid, sub string) *session.Session {
		return &session.Session{
			Subject: sub, SID: sid, Issuer: "https://issuer.example/",
			Claims:  []byte(`{"sub":"` + sub + `","name":"Fixture ` + n + `"}`),
			IDToken: "id-token-" + n, AccessToken: "access-token-" + n, RefreshToken: "refresh-token-" + n,
			TokenType: "Bearer", AccessExpiry: now.Add(5 * time.Minute),
			Created: now, LastSeen: now, AbsoluteExpiry: far, Version: 3,
		}
	}
	fx := Fixture{Handles: map[string]string{}}
	for _, c := range [][3]string{{"alice1", "sid-a", "alice"}, {"alice2", "sid-a2", "alice"}, {"bob", "sid-b", "bob"}, {"carol", "sid-c", "carol"}} {
		h, err := st.Create(ctx, sess(c[0], c[1], c[2]))
		if err != nil {
			log.Fatal(err)
		}
		fx.Handles[c[0]] = h
	}
	if _, err := st.Update(ctx, fx.Handles["carol"], func(s *session.Session) error {
		s.AccessToken = "access-token-carol-2"
		return nil
	}); err != nil {
		log.Fatal(err)
	}
	e := sredis.NewEnded(rdb, prefix+"ended:")
	if err := e.EndSID(ctx, "ended-sid", far); err != nil {
		log.Fatal(err)
	}
	if err := e.EndSubject(ctx, "ended-sub", now, far); err != nil {
		log.Fatal(err)
	}
	names, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil {
		log.Fatal(err)
	}
	slices.Sort(names)
	for _, name := range names {
		k := Key{Name: strings.TrimPrefix(name, prefix)}
		k.Type = rdb.Type(ctx, name).Val()
		switch k.Type {
		case "string":
			k.Value, _ = rdb.Get(ctx, name).Bytes()
		case "zset":
			zs := rdb.ZRangeWithScores(ctx, name, 0, -1).Val()
			k.Members = map[string]float64{}
			for _, z := range zs {
				k.Members[z.Member.(string)] = z.Score
			}
		default:
			log.Fatalf("key %s of type %s", name, k.Type)
		}
		if ms := rdb.PExpireTime(ctx, name).Val(); ms > 0 {
			k.ExpireAtMS = ms.Milliseconds()
		}
		fx.Keys = append(fx.Keys, k)
		rdb.Del(ctx, name)
	}
	b, _ := json.MarshalIndent(fx, "", "  ")
	if err := os.WriteFile(os.Args[2], append(b, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
}
