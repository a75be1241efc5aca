package redistokens

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/bff/tokens"
	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/session"
)

// exchangeProvider is a token endpoint answering RFC 8693 token exchange
// requests slowly, counting them; audience "refused" gets invalid_target.
type exchangeProvider struct {
	srv   *httptest.Server
	n     atomic.Int64
	delay time.Duration
}

func newExchangeProvider(t *testing.T) *exchangeProvider {
	p := &exchangeProvider{delay: 50 * time.Millisecond}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange" || r.PostForm.Get("subject_token") == "" {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_request"}`)
			return
		}
		if r.PostForm.Get("audience") == "refused" {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"error":"invalid_target","error_description":"audience \"refused\" is not allowed\u0007"}`)
			return
		}
		n := p.n.Add(1)
		time.Sleep(p.delay)
		fmt.Fprintf(w, `{"access_token":"xt-%d-%s","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":120}`, n, r.PostForm.Get("subject_token"))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestExchangeAcrossInstances: two gateway instances (two Managers on one
// Redis) serving 100 parallel calls of one session and route make one
// exchange; the second instance takes the first's result from the
// shared record. A new session access token (a refresh) is exchanged
// anew; a refusal is an *ExchangeRefusedError with the provider's words,
// control bytes and quotes dropped.
func TestExchangeAcrossInstances(t *testing.T) {
	t.Parallel()
	c := redistest.Client(t)
	prefix := redistest.Prefix(t, c, "")
	p := newExchangeProvider(t)
	newManager := func() *tokens.Manager {
		m, err := tokens.New(tokens.Config{
			OAuth2: &oauth2.Config{ClientID: "gateway", ClientSecret: "secret",
				Endpoint: oauth2.Endpoint{TokenURL: p.srv.URL, AuthStyle: oauth2.AuthStyleInHeader}},
			Locker: NewLocker(c, prefix), Grace: NewGrace(c, prefix+"tokens:"),
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a, b := newManager(), newManager()
	now := time.Now()
	s := &session.Session{ID: "s1", Subject: "alice", AccessToken: "at-1", RefreshToken: "rt-1",
		AccessExpiry: now.Add(5 * time.Minute), Created: now, LastSeen: now, AbsoluteExpiry: now.Add(time.Hour)}
	target := tokens.ExchangeTarget{Audience: "orders-api", Scope: "orders:read"}
	ctx := ctxT(t)

	var wg sync.WaitGroup
	got := make([]string, 100)
	errs := make([]error, 100)
	for i := range got {
		m := a
		if i%2 == 1 {
			m = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = m.Exchanged(ctx, s, target)
		}()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || got[i] != got[0] {
			t.Fatalf("call %d: %q %v, want %q", i, got[i], errs[i], got[0])
		}
	}
	if n := p.n.Load(); n != 1 {
		t.Fatalf("%d exchanges at the provider for 100 calls on two instances, want 1", n)
	}

	// A refreshed session: its new token is exchanged.
	s2 := *s
	s2.AccessToken = "at-2"
	tok, err := b.Exchanged(ctx, &s2, target)
	if err != nil || tok == got[0] || p.n.Load() != 2 {
		t.Fatalf("after a refresh: %q %v, %d exchanges; want a new token from a second exchange", tok, err, p.n.Load())
	}
	// Another target is another exchange.
	if _, err := a.Exchanged(ctx, &s2, tokens.ExchangeTarget{Audience: "inventory-api"}); err != nil || p.n.Load() != 3 {
		t.Fatalf("another target: %v, %d exchanges", err, p.n.Load())
	}

	// Refused.
	_, err = a.Exchanged(ctx, &s2, tokens.ExchangeTarget{Audience: "refused"})
	var re *tokens.ExchangeRefusedError
	if !errors.As(err, &re) || !errors.Is(err, tokens.ErrExchangeRefused) || re.Code != "invalid_target" || re.Description != "audience refused is not allowed" {
		t.Fatalf("refused: %#v", err)
	}
	// The provider down: unavailable, not refused.
	p.srv.Close()
	_, err = a.Exchanged(ctx, &s2, tokens.ExchangeTarget{Audience: "payments-api"})
	if !errors.Is(err, tokens.ErrProviderUnavailable) || errors.Is(err, tokens.ErrExchangeRefused) {
		t.Fatalf("provider down: %v", err)
	}
}
