package redistokens

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/cookie"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// slowProvider is a token endpoint that issues new tokens on every
// refresh and keeps old refresh tokens valid (Keycloak's default, or a
// provider's reuse interval: without that, two instances refreshing with
// one token end the grant, which no lock on the gateway's side can undo).
// It issues each response's tokens when the request arrives, and holds
// the first response until hold is closed: that instance's tokens are
// the older ones, however late they come back.
type slowProvider struct {
	srv     *httptest.Server
	mu      sync.Mutex
	n       int
	issued  map[string]bool
	hold    chan struct{}
	arrived chan struct{}
}

func newSlowProvider(t *testing.T) *slowProvider {
	p := &slowProvider{issued: map[string]bool{"rt-0-Qp8rS1mNc4eDf6": true}, hold: make(chan struct{}), arrived: make(chan struct{})}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "refresh_token" {
			http.Error(w, `{"error":"unsupported_grant_type"}`, 400)
			return
		}
		p.mu.Lock()
		if !p.issued[r.PostForm.Get("refresh_token")] {
			p.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_grant"}`)
			return
		}
		p.n++
		n := p.n
		rt := fmt.Sprintf("rt-%d-Qp8rS1mNc4eDf6", n)
		p.issued[rt] = true
		p.mu.Unlock()
		if n == 1 {
			close(p.arrived)
			<-p.hold
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d-Zk9qW3xYb7uVt2","token_type":"Bearer","expires_in":300,"refresh_token":%q}`, n, rt)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// syncBuffer is a log sink safe for the Manager's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "bffgate_token_refresh_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelIs(m, "result", result) {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labelIs(m *dto.Metric, name, value string) bool {
	for _, l := range m.GetLabel() {
		if l.GetName() == name && l.GetValue() == value {
			return true
		}
	}
	return false
}

// TestLockLostMidRefresh: instance A's refresh outlasts its lock (its
// token endpoint answers after the lock's ttl, and the lock is not kept
// alive); instance B takes the lock meanwhile and refreshes the same
// session. A's older tokens, arriving last, never replace B's: A sees
// through the fencing check that its lock is gone (counted as lock_lost),
// and either adopts B's grace record or, without a shared one, is refused
// by the compare inside the session store's Update. Both callers end with
// B's tokens, which the store holds.
func TestLockLostMidRefresh(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		cookie      bool
		sharedGrace bool
	}{
		{"redis store, shared grace", false, true},
		// The compare in Update alone keeps B's tokens.
		{"redis store, grace per instance", false, false},
		{"cookie store, shared grace", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := newSlowProvider(t)
			prefix := redistest.Prefix(t, redistest.Client(t), "")
			keys := []cookie.KeyPair{{Hash: bytes.Repeat([]byte("h"), 32), Block: bytes.Repeat([]byte("b"), 32)}}
			type inst struct {
				store session.Store
				m     *tokens.Manager
				reg   *prometheus.Registry
				log   *syncBuffer
			}
			newInst := func(lockTTL time.Duration, opts ...Option) *inst {
				c := redistest.Client(t)
				in := &inst{reg: prometheus.NewRegistry(), log: &syncBuffer{}}
				var err error
				if tc.cookie {
					in.store, err = cookie.New(cookie.Config{Keys: keys, Ended: sessionredis.NewEnded(c, prefix+"session:")})
				} else {
					in.store, err = sessionredis.New(c, sessionredis.Config{Prefix: prefix + "session:"})
				}
				if err != nil {
					t.Fatal(err)
				}
				var grace tokens.GraceStore = NewGrace(c, prefix+"tokens:")
				if !tc.sharedGrace {
					grace = tokens.NewMemoryGrace()
				}
				in.m, err = tokens.New(tokens.Config{
					OAuth2: &oauth2.Config{ClientID: "gateway", ClientSecret: "secret",
						Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL, AuthStyle: oauth2.AuthStyleInHeader}},
					Locker:     NewLocker(c, prefix+"tokens:", append(opts, WithMaxWait(15*time.Second))...),
					LockTTL:    lockTTL,
					Grace:      grace,
					Registerer: in.reg,
					Logger:     slog.New(slog.NewTextHandler(in.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
				})
				if err != nil {
					t.Fatal(err)
				}
				return in
			}
			// A's lock lasts 150ms and is not extended: the stalled holder.
			a := newInst(150*time.Millisecond, WithMaxHold(-1))
			b := newInst(0)
			ctx := ctxT(t)

			now := time.Now()
			h, err := a.store.Create(ctx, &session.Session{
				Subject: "alice", AccessToken: "at-0-Zk9qW3xYb7uVt2", RefreshToken: "rt-0-Qp8rS1mNc4eDf6", TokenType: "Bearer",
				AccessExpiry: now.Add(-time.Minute), Created: now, LastSeen: now, AbsoluteExpiry: now.Add(time.Hour),
			})
			if err != nil {
				t.Fatal(err)
			}
			s, err := a.store.Get(ctx, h)
			if err != nil {
				t.Fatal(err)
			}

			type out struct {
				s   *session.Session
				h   string
				err error
			}
			aDone := make(chan out, 1)
			go func() {
				own := *s
				got, gh, err := a.m.Fresh(ctx, a.store, h, &own, false)
				aDone <- out{got, gh, err}
			}()
			// A is at the provider, holding the lock. B waits for it to
			// expire, then refreshes and saves.
			<-p.arrived
			own := *s
			bs, bh, err := b.m.Fresh(ctx, b.store, h, &own, false)
			if err != nil {
				t.Fatalf("instance B: %v", err)
			}
			if bs.AccessToken != "at-2-Zk9qW3xYb7uVt2" {
				t.Fatalf("instance B got %q, want the provider's second tokens", bs.AccessToken)
			}
			close(p.hold)
			ar := <-aDone
			if ar.err != nil {
				t.Fatalf("instance A: %v", ar.err)
			}

			// Both callers, and what their handles name, hold B's newer
			// tokens; A's older at-1/rt-1 were dropped.
			for _, r := range []out{ar, {bs, bh, nil}} {
				if r.s.AccessToken != bs.AccessToken || r.s.RefreshToken != bs.RefreshToken {
					t.Errorf("a caller got %q/%q, want B's %q/%q", r.s.AccessToken, r.s.RefreshToken, bs.AccessToken, bs.RefreshToken)
				}
				stored, err := b.store.Get(ctx, r.h)
				if err != nil || stored.AccessToken != bs.AccessToken || stored.RefreshToken != bs.RefreshToken {
					t.Errorf("a caller's handle names %q/%q (%v), want B's tokens", stored.AccessToken, stored.RefreshToken, err)
				}
			}
			if got := counter(t, a.reg, "lock_lost"); got != 1 {
				t.Errorf("instance A: lock_lost = %v, want 1", got)
			}
			if got := counter(t, a.reg, "concurrent"); got != 1 {
				t.Errorf("instance A: concurrent = %v, want 1", got)
			}
			if got := counter(t, a.reg, "refreshed"); got != 0 {
				t.Errorf("instance A: refreshed = %v, want 0 (its tokens must not be saved)", got)
			}
			if got := counter(t, b.reg, "refreshed"); got != 1 {
				t.Errorf("instance B: refreshed = %v, want 1", got)
			}
			// A request that read the session before it all, on either
			// instance, is handed B's tokens without a third refresh.
			for _, in := range []*inst{a, b} {
				own := *s
				late, _, err := in.m.Fresh(ctx, in.store, h, &own, false)
				if err != nil || late.AccessToken != bs.AccessToken {
					t.Errorf("late request: %v, got %q, want B's %q", err, late.AccessToken, bs.AccessToken)
				}
			}
			p.mu.Lock()
			calls := p.n
			p.mu.Unlock()
			if calls != 2 {
				t.Errorf("%d refreshes at the provider, want 2", calls)
			}
			logs := a.log.String()
			if !strings.Contains(logs, "refresh lock lost") {
				t.Errorf("instance A logged no lost lock:\n%s", logs)
			}
			for _, secret := range []string{"Zk9qW3xYb7uVt2", "Qp8rS1mNc4eDf6"} {
				if strings.Contains(logs+b.log.String(), secret) {
					t.Errorf("a token appears in the logs")
				}
			}
		})
	}
}

// TestLockUnverified: when Redis cannot say whether the lock is still
// held (here the lock's client is closed while the refresh is at the
// provider), the refresh is counted as lock_unverified and still saved,
// since nobody else wrote meanwhile: the rotated refresh token is not
// lost.
func TestLockUnverified(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	lockClient, c := redistest.Client(t), redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	store, err := sessionredis.New(c, sessionredis.Config{Prefix: prefix + "session:"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := tokens.New(tokens.Config{
		OAuth2: &oauth2.Config{ClientID: "gateway", ClientSecret: "secret",
			Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL, AuthStyle: oauth2.AuthStyleInHeader}},
		Locker:     NewLocker(lockClient, prefix+"tokens:"),
		Grace:      NewGrace(c, prefix+"tokens:"),
		Registerer: reg,
		Logger:     slog.New(slog.DiscardHandler),
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
	s, err = store.Get(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	type out struct {
		s   *session.Session
		err error
	}
	done := make(chan out, 1)
	go func() {
		got, _, err := m.Fresh(ctx, store, h, s, false)
		done <- out{got, err}
	}()
	<-p.arrived
	lockClient.Close()
	close(p.delay)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	stored, err := store.Get(ctx, h)
	if err != nil || stored.RefreshToken != r.s.RefreshToken || !p.isLive(stored.RefreshToken) || stored.RefreshToken == s.RefreshToken {
		t.Fatalf("stored refresh token %q (%v): want the rotated, live one the caller got", stored.RefreshToken, err)
	}
	if counter(t, reg, "lock_unverified") != 1 || counter(t, reg, "refreshed") != 1 || counter(t, reg, "lock_lost") != 0 {
		t.Errorf("lock_unverified = %v (want 1), refreshed = %v (want 1), lock_lost = %v (want 0)",
			counter(t, reg, "lock_unverified"), counter(t, reg, "refreshed"), counter(t, reg, "lock_lost"))
	}
}
