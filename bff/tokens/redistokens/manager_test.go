package redistokens

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/cookie"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// provider is a token endpoint that rotates refresh tokens and, like a
// provider following RFC 9700 §4.14.2, revokes the whole grant when a
// rotated-away refresh token is used again.
type provider struct {
	srv *httptest.Server

	mu      sync.Mutex
	n       int
	live    map[string]string // refresh token -> grant
	used    map[string]string // rotated-away refresh token -> grant
	revoked map[string]bool

	refreshes atomic.Int64
	delay     chan struct{} // refreshes wait for it to close
	arrived   chan struct{} // receives once when a refresh arrives
}

func newProvider(t *testing.T) *provider {
	p := &provider{
		live: map[string]string{}, used: map[string]string{}, revoked: map[string]bool{},
		delay: make(chan struct{}), arrived: make(chan struct{}, 1),
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.token))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) grant() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	rt := fmt.Sprintf("rt-%d-Qp8rS1mNc4eDf6", p.n)
	p.live[rt] = fmt.Sprintf("grant-%d", p.n)
	return rt
}

func (p *provider) isLive(rt string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.live[rt]
	return ok
}

func (p *provider) token(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "refresh_token" {
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":"unsupported_grant_type"}`)
		return
	}
	if id, secret, _ := r.BasicAuth(); id != "gateway" || secret != "secret" {
		w.WriteHeader(401)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	p.refreshes.Add(1)
	select {
	case p.arrived <- struct{}{}:
	default:
	}
	<-p.delay
	rt := r.PostForm.Get("refresh_token")
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.live[rt]
	if !ok || p.revoked[g] {
		if g, reused := p.used[rt]; reused {
			p.revoked[g] = true
			for k, v := range p.live {
				if v == g {
					delete(p.live, k)
				}
			}
		}
		w.WriteHeader(400)
		fmt.Fprint(w, `{"error":"invalid_grant"}`)
		return
	}
	delete(p.live, rt)
	p.used[rt] = g
	p.n++
	next := fmt.Sprintf("rt-%d-Qp8rS1mNc4eDf6", p.n)
	p.live[next] = g
	fmt.Fprintf(w, `{"access_token":"at-%d-Zk9qW3xYb7uVt2","token_type":"Bearer","expires_in":300,"refresh_token":%q}`, p.n, next)
}

// signalLocker passes Lock through and reports, once, that it was called:
// the test releases the provider only when both instances have reached the
// lock, so that their refreshes really overlap.
type signalLocker struct {
	tokens.Locker
	once   sync.Once
	called chan struct{}
}

func (s *signalLocker) Lock(ctx context.Context, key string, ttl time.Duration) (func(), error) {
	s.once.Do(func() { close(s.called) })
	return s.Locker.Lock(ctx, key, ttl)
}

// LockFenced passes through too, so that the Manager takes the fenced
// path it takes with a bare *Locker.
func (s *signalLocker) LockFenced(ctx context.Context, key string, ttl time.Duration) (func(), func(context.Context) error, error) {
	s.once.Do(func() { close(s.called) })
	return s.Locker.(tokens.FencedLocker).LockFenced(ctx, key, ttl)
}

// instance is one gateway instance: its own Redis client, lock, grace
// store, session store and Manager.
type instance struct {
	locker *signalLocker
	store  session.Store
	m      *tokens.Manager
}

func newInstance(t *testing.T, p *provider, prefix string, cookieKeys []cookie.KeyPair) *instance {
	t.Helper()
	c := redistest.Client(t)
	in := &instance{locker: &signalLocker{Locker: NewLocker(c, prefix+"tokens:"), called: make(chan struct{})}}
	var err error
	if cookieKeys == nil {
		in.store, err = sessionredis.New(c, sessionredis.Config{Prefix: prefix + "session:"})
	} else {
		in.store, err = cookie.New(cookie.Config{Keys: cookieKeys, Ended: sessionredis.NewEnded(c, prefix+"session:")})
	}
	if err != nil {
		t.Fatal(err)
	}
	in.m, err = tokens.New(tokens.Config{
		OAuth2: &oauth2.Config{
			ClientID: "gateway", ClientSecret: "secret",
			Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL, AuthStyle: oauth2.AuthStyleInHeader},
		},
		Locker: in.locker,
		Grace:  NewGrace(c, prefix+"tokens:"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// TestTwoInstances is the scale-out refresh race: 200 concurrent requests
// of one session with an expired access token, split over two gateway
// instances that share only Redis, cause exactly one refresh at a rotating
// provider, and all 200 get the new tokens. With the cookie store every
// request carries the same old cookie, and the grace record in Redis
// serves the instance that did not refresh.
func TestTwoInstances(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"redis-store", "cookie-store"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t)
			prefix := redistest.Prefix(t, redistest.Client(t), "")
			var keys []cookie.KeyPair
			if kind == "cookie-store" {
				keys = []cookie.KeyPair{{Hash: bytes.Repeat([]byte("h"), 32), Block: bytes.Repeat([]byte("b"), 32)}}
			}
			ins := []*instance{newInstance(t, p, prefix, keys), newInstance(t, p, prefix, keys)}
			ctx := ctxT(t)

			now := time.Now()
			h, err := ins[0].store.Create(ctx, &session.Session{
				Subject: "alice", AccessToken: "at-initial", RefreshToken: p.grant(), TokenType: "Bearer",
				AccessExpiry: now.Add(-time.Minute), Created: now, LastSeen: now, AbsoluteExpiry: now.Add(time.Hour),
			})
			if err != nil {
				t.Fatal(err)
			}
			s, err := ins[1].store.Get(ctx, h)
			if err != nil {
				t.Fatal(err)
			}
			oldRT := s.RefreshToken

			const n = 200
			type out struct {
				s   *session.Session
				h   string
				err error
			}
			res := make([]out, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					own := *s // each request decoded its own copy
					in := ins[i%2]
					res[i].s, res[i].h, res[i].err = in.m.Fresh(ctx, in.store, h, &own, false)
				}()
			}
			// One instance is at the provider, the other waits for the lock.
			<-p.arrived
			<-ins[0].locker.called
			<-ins[1].locker.called
			close(p.delay)
			wg.Wait()

			if got := p.refreshes.Load(); got != 1 {
				t.Fatalf("%d refresh requests at the provider, want 1", got)
			}
			for i, r := range res {
				if r.err != nil {
					t.Fatalf("caller %d (instance %d): %v", i, i%2, r.err)
				}
				if r.s.AccessToken != res[0].s.AccessToken || r.s.AccessToken == "at-initial" {
					t.Fatalf("caller %d got access token %q, caller 0 %q", i, r.s.AccessToken, res[0].s.AccessToken)
				}
				// What the caller's handle names, read on the other instance.
				stored, err := ins[(i+1)%2].store.Get(ctx, r.h)
				if err != nil || stored.RefreshToken != r.s.RefreshToken || !p.isLive(stored.RefreshToken) {
					t.Fatalf("caller %d: handle names refresh token %q (%v); want the rotated, live one", i, stored.RefreshToken, err)
				}
			}

			// A request that read the session before the refresh reaches
			// the other instance afterwards: the grace record (or the
			// re-read session) answers, no second provider call (which the
			// provider would treat as reuse).
			for _, in := range ins {
				late, lh, err := in.m.Fresh(ctx, in.store, h, s, false)
				if err != nil || late.AccessToken != res[0].s.AccessToken || p.refreshes.Load() != 1 {
					t.Fatalf("late request: %v, access %q, refreshes %d", err, late.AccessToken, p.refreshes.Load())
				}
				if kind == "cookie-store" && lh == h {
					t.Errorf("cookie store: the late request's cookie was not updated")
				}
			}
			if !p.isLive(res[0].s.RefreshToken) || p.isLive(oldRT) {
				t.Errorf("the grant was revoked or not rotated")
			}
			assertNoTokenInRedis(t, redistest.Client(t), prefix+"tokens:", oldRT, res[0].s.AccessToken, res[0].s.RefreshToken)
		})
	}
}

// assertNoTokenInRedis checks that the keys and values under prefix (the
// lock and grace records) hold no token in the clear, and that a grace
// record is there.
func assertNoTokenInRedis(t *testing.T, c goredis.UniversalClient, prefix string, toks ...string) {
	t.Helper()
	ctx := ctxT(t)
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	graces := 0
	for iter.Next(ctx) {
		k := iter.Val()
		v, _ := c.Get(ctx, k).Bytes()
		if bytes.HasPrefix([]byte(k), []byte(prefix+"grace:")) {
			graces++
		}
		for _, tok := range toks {
			if bytes.Contains([]byte(k), []byte(tok)) || bytes.Contains(v, []byte(tok)) {
				t.Errorf("Redis key %q or its value holds a token in the clear", k)
			}
		}
	}
	if graces != 1 {
		t.Errorf("%d grace records in Redis, want 1", graces)
	}
}

// With Redis down, a due refresh fails with ErrProviderUnavailable (503,
// session kept) and never reaches the provider: without the shared lock
// two instances could both use the refresh token.
func TestManagerRedisDown(t *testing.T) {
	t.Parallel()
	live := redistest.Client(t)
	prefix := redistest.Prefix(t, live, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	down := goredis.NewClient(&goredis.Options{Addr: addr, MaxRetries: -1})
	t.Cleanup(func() { down.Close() })

	p := newProvider(t)
	close(p.delay)
	store, err := cookie.New(cookie.Config{
		Keys:  []cookie.KeyPair{{Hash: bytes.Repeat([]byte("h"), 32), Block: bytes.Repeat([]byte("b"), 32)}},
		Ended: sessionredis.NewEnded(live, prefix+"session:"),
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := tokens.New(tokens.Config{
		OAuth2: &oauth2.Config{ClientID: "gateway", ClientSecret: "secret",
			Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL, AuthStyle: oauth2.AuthStyleInHeader}},
		Locker: NewLocker(down, prefix), Grace: NewGrace(down, prefix),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	now := time.Now()
	s := &session.Session{Subject: "alice", AccessToken: "at", RefreshToken: p.grant(),
		AccessExpiry: now.Add(-time.Minute), Created: now, LastSeen: now, AbsoluteExpiry: now.Add(time.Hour)}
	h, err := store.Create(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = m.Fresh(ctx, store, h, s, false)
	if !errors.Is(err, tokens.ErrProviderUnavailable) || errors.Is(err, tokens.ErrRefreshRejected) {
		t.Fatalf("Fresh with Redis down: %v, want ErrProviderUnavailable", err)
	}
	if p.refreshes.Load() != 0 || !p.isLive(s.RefreshToken) {
		t.Errorf("the refresh went to the provider without the lock")
	}
}
