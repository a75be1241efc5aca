package redis

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/internal/redistest"
)

// An ACL user without the store's channels would see every session write
// fail with NOPERM (each write publishes its invalidation): CheckPublish
// says so at start, with the ACL rule to add; with the channels it is
// quiet.
func TestCheckPublishACL(t *testing.T) {
	admin := redistest.Client(t)
	prefix := redistest.Prefix(t, admin, "session:")
	user := "bffgate-acl-test-" + rand.Text()[:10]
	password := rand.Text()
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })

	for _, tc := range []struct {
		name     string
		channels string
		wantErr  bool
	}{
		{"keys only", "resetchannels", true},
		{"keys and the prefix's channels", "&" + prefix + "*", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := admin.Do(t.Context(), "ACL", "SETUSER", user, "reset", "on", ">"+password, "~"+prefix+"*", tc.channels, "+@all").Err(); err != nil {
				t.Fatalf("ACL SETUSER: %v", err)
			}
			opts := admin.Options()
			c := goredis.NewClient(&goredis.Options{Addr: opts.Addr, DB: opts.DB, Username: user, Password: password})
			defer c.Close()
			s, err := New(c, Config{Prefix: prefix})
			if err != nil {
				t.Fatal(err)
			}
			err = s.CheckPublish(t.Context())
			if got := errors.Is(err, ErrNoPublish); got != tc.wantErr {
				t.Fatalf("CheckPublish = %v, want ErrNoPublish: %v", err, tc.wantErr)
			}
			if tc.wantErr && !containsAll(err.Error(), "&"+prefix+"*", prefix+"invalidate") {
				t.Errorf("the error does not say which channel and which ACL rule: %v", err)
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
