package scaleout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/redisserver"
	"github.com/bffgate/bffgate/e2e/stack"
)

// phases of the outage run.
const (
	phaseUp int32 = iota
	phaseDown
	phaseBack
)

// outcome counts what the load saw.
type outcome struct {
	mu       sync.Mutex
	byStatus map[string]int // "phase/target/status"
}

func (o *outcome) add(phase int32, target string, status int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.byStatus == nil {
		o.byStatus = map[string]int{}
	}
	o.byStatus[fmt.Sprintf("%s/%s/%d", [...]string{"up", "down", "back"}[phase], target, status)]++
}

func (o *outcome) get(phase int32, target string, status int) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byStatus[fmt.Sprintf("%s/%s/%d", [...]string{"up", "down", "back"}[phase], target, status)]
}

// TestRedisOutage runs a gateway and an issuer on a Redis of the test's
// own, generates load, stops Redis in the middle, and checks the fault
// behaviour of the scale-out issue: every error is a 503 with a JSON body
// (never a 500, never a dropped connection), the process stays up and
// /readyz says why it is not ready; when Redis returns the same process
// serves again without a restart, and a token revoked before the outage
// stays revoked.
//
//   - kept: Redis returns with its data (persistence: SHUTDOWN SAVE and
//     the snapshot loaded at start): no session is lost, the old cookie
//     works again without a new login.
//   - empty: Redis returns empty (no persistence): the sessions are gone,
//     the old cookie is a clean 401, and a new login works at once.
func TestRedisOutage(t *testing.T) {
	t.Run("kept", func(t *testing.T) { redisOutage(t, true) })
	t.Run("empty", func(t *testing.T) { redisOutage(t, false) })
}

func redisOutage(t *testing.T, keep bool) {
	rs := redisserver.Start(t)
	s := stack.Start(t, stack.Options{Env: redisEnv(rs.URL(), "e2e-outage:")})
	ctx := context.Background()
	u := newUser(t)
	cookie := u.mustLogin(s.GatewayURL)
	c := issuerclient.New(t, s.IssuerURL, testClient)
	live := c.MustGrant()
	revoked := c.MustGrant()
	if r, err := c.Revoke(ctx, revoked.AccessToken, "access_token"); err != nil || r.Status != http.StatusOK {
		t.Fatalf("revoke: %s (%v), want 200", r, err)
	}

	var (
		phase atomic.Int32
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		seen  outcome
	)
	// check classifies one answer: a request sent and answered while Redis
	// was up must succeed; one that overlapped the outage may succeed or
	// be a 503 with a JSON error; anything else fails the test.
	check := func(target string, sent int32, status int, jsonErr string, err error) {
		now := phase.Load()
		seen.add(now, target, status)
		switch {
		case err != nil:
			t.Errorf("%s (phase %d): transport error: %v: the process dropped the request", target, now, err)
		case status == http.StatusOK:
		case sent == phaseUp && now == phaseUp:
			t.Errorf("%s: HTTP %d while Redis was up, want 200", target, status)
		case status == http.StatusServiceUnavailable && jsonErr != "":
		case status == http.StatusUnauthorized && jsonErr != "" && now == phaseBack && target != "introspect" && !keep:
			// Redis came back empty: the session is gone.
		default:
			t.Errorf("%s (phase %d): HTTP %d error %q: want 200 or 503 with a JSON error", target, now, status, jsonErr)
		}
	}
	load := func(target string, send func() (int, string, error)) {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sent := phase.Load()
			status, jsonErr, err := send()
			check(target, sent, status, jsonErr, err)
			if err != nil {
				return
			}
		}
	}
	gateway := func(path string) func() (int, string, error) {
		return func() (int, string, error) {
			a, err := u.Call(ctx, http.MethodGet, s.GatewayURL+path, cookie)
			return a.Status, a.JSONError(), err
		}
	}
	wg.Add(3)
	go load("gateway /api/whoami", gateway("/api/whoami"))
	go load("gateway /bff/user", gateway("/bff/user"))
	go load("introspect", func() (int, string, error) {
		r, err := c.Post(ctx, "/introspect", url.Values{"token": {live.AccessToken}})
		if errors.Is(err, issuerclient.ErrNotJSON) {
			return r.Status, "", nil
		}
		return r.Status, r.Code, err
	})
	stopLoad := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer stopLoad()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		began := time.Now()
		defer func() { t.Logf("%s: after %s", what, time.Since(began).Round(time.Millisecond)) }()
		deadline := began.Add(60 * time.Second)
		for !cond() {
			if t.Failed() {
				t.FailNow()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60 s; answers so far: %v", what, seen.byStatus)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("answers with Redis up", func() bool { return seen.get(phaseUp, "gateway /api/whoami", 200) >= 20 })

	phase.Store(phaseDown)
	rs.Shutdown(keep)
	waitFor("gateway 503s with Redis down", func() bool { return seen.get(phaseDown, "gateway /bff/user", 503) >= 5 })
	for _, l := range []struct{ name, url string }{{"gateway", s.GatewayURL}, {"issuer", s.IssuerURL}} {
		a, err := plainGet(ctx, l.url+"/readyz")
		var body struct {
			Failed map[string]string `json:"failed"`
		}
		if err != nil || a.Status != http.StatusServiceUnavailable || json.Unmarshal([]byte(a.Body), &body) != nil || len(body.Failed) == 0 {
			t.Errorf("%s /readyz with Redis down: %v %s, want 503 naming the failed check", l.name, err, a)
		}
		for name, why := range body.Failed {
			if why == "" {
				t.Errorf("%s /readyz with Redis down: check %q failed without saying why", l.name, name)
			}
		}
		if a, err := plainGet(ctx, l.url+"/healthz"); err != nil || a.Status != http.StatusOK {
			t.Errorf("%s /healthz with Redis down: %v %s, want 200 (the process is up)", l.name, err, a)
		}
	}

	// Redis returns: bffgate reconnects by itself. The phase changes before
	// the start, not after: bffgate may reconnect (and, with an empty
	// Redis, answer 401 for the lost session) before start's own PING loop
	// sees the server, and those answers belong to the back phase.
	phase.Store(phaseBack)
	rs.Restart()
	waitFor("/readyz after Redis returned", func() bool {
		for _, base := range []string{s.GatewayURL, s.IssuerURL} {
			if a, err := plainGet(ctx, base+"/readyz"); err != nil || a.Status != http.StatusOK {
				return false
			}
		}
		return true
	})
	stopLoad()
	t.Logf("answers: %v", seen.byStatus)

	if keep {
		// Redis kept the session: the old cookie works again, no login.
		if a, err := u.Call(ctx, http.MethodGet, s.GatewayURL+"/bff/user", cookie); err != nil || a.Status != http.StatusOK {
			t.Errorf("GET /bff/user with a session Redis kept through the outage: %v %s, want 200", err, a)
		}
		if !c.Introspect(ctx, live.AccessToken, "access_token") {
			t.Errorf("a live access token minted before the outage is inactive after it")
		}
	} else {
		// The sessions were in the Redis that restarted empty: the old
		// cookie is a clean 401, and a new login works at once.
		if a, err := u.Call(ctx, http.MethodGet, s.GatewayURL+"/bff/user", cookie); err != nil || a.Status != http.StatusUnauthorized || a.JSONError() == "" {
			t.Errorf("GET /bff/user with a session Redis lost: %v %s, want 401 JSON (log in again)", err, a)
		}
		cookie = u.mustLogin(s.GatewayURL)
	}
	if c.Introspect(ctx, revoked.AccessToken, "access_token") {
		t.Errorf("an access token revoked before the outage is active after it")
	}
	// Every request succeeds again, concurrently.
	var burst sync.WaitGroup
	for w := range 4 {
		burst.Add(1)
		go func() {
			defer burst.Done()
			for i := range 20 {
				if a, err := u.whoami(ctx, s.GatewayURL, cookie); err != nil || a.Status != http.StatusOK {
					t.Errorf("worker %d request %d after Redis returned: %v %s, want 200", w, i, err, a)
					return
				}
			}
		}()
	}
	burst.Wait()
	if tk := c.MustGrant(); !c.Introspect(ctx, tk.AccessToken, "access_token") {
		t.Errorf("a token minted after Redis returned is inactive")
	}
	if lines := s.LogLines("panic"); len(lines) > 0 {
		t.Errorf("panics in the log: %v", lines)
	}
}

// plainGet fetches a health endpoint without cookies.
func plainGet(ctx context.Context, rawURL string) (issuerclient.Answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return issuerclient.Answer{}, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return issuerclient.Answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return issuerclient.Answer{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}, err
}
