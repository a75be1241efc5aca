package scaleout

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/issuerclient"
	"github.com/bffgate/bffgate/e2e/stack"
	"github.com/bffgate/bffgate/internal/testhttp"
)

// TestCookieRefreshAcrossGateways runs two gateway processes on one Redis
// with cookie sessions and 5 s access tokens, and sends 50 calls to each
// at once with the same expired cookie, ten times over. Every call must
// answer 200, and the issuer must see exactly one refresh per expiry:
// the instance that loses the Redis refresh lock waits, then finds the
// winner's grace record (it cannot read the cookie the other instance
// set). Without the cross-instance lock both instances refresh with the
// same refresh token, the issuer sees reuse (RFC 9700 §4.14.2), revokes
// the grant, and one instance answers 401 session_expired.
func TestCookieRefreshAcrossGateways(t *testing.T) { refreshAcrossGateways(t, "cookie") }

// TestRedisRefreshAcrossCachedGateways is the same with Redis sessions and
// each gateway's near cache (on by default): both gateways hold the
// expired session in memory when the round starts, one refreshes, and the
// other, after the lock, must not refresh again from a cached copy (the
// reuse would revoke the grant).
func TestRedisRefreshAcrossCachedGateways(t *testing.T) { refreshAcrossGateways(t, "redis") }

func refreshAcrossGateways(t *testing.T, store string) {
	redisURL, prefix := sharedRedis(t)
	extra := []string{
		"BFFGATE_GATEWAY_SESSION_STORE=" + store,
		"BFFGATE_ISSUER_TOKENS_ACCESS_TTL=5s",
		"BFFGATE_GATEWAY_REFRESH_SKEW=1s",
	}
	a := stack.Start(t, stack.Options{Env: redisEnv(redisURL, prefix, extra...)})
	b := stack.Start(t, stack.Options{Env: redisEnv(redisURL, prefix, append(extra, "BFFGATE_ISSUER_URL="+a.IssuerURL)...)})
	gateways := []*stack.Stack{a, b}

	u := newUser(t)
	cookie := u.mustLogin(a.GatewayURL)
	issued := time.Now() // the access token of the login
	const rounds, perGateway = 10, 50
	for round := range rounds {
		// Past the access token's expiry (5 s, inside the 1 s skew a
		// little sooner): every call of the round must refresh first.
		time.Sleep(time.Until(issued.Add(5*time.Second + 200*time.Millisecond)))
		before := refreshesAtIssuer(t, gateways)
		issued = time.Now()

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			answers = map[string]map[int]int{} // gateway -> status -> count
			errs    []error
			next    string
		)
		for gi, gw := range gateways {
			name := string("AB"[gi])
			answers[name] = map[int]int{}
			for range perGateway {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r, err := u.whoami(ctx, gw.GatewayURL, cookie)
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, fmt.Errorf("gateway %s: %w", name, err))
						return
					}
					answers[name][r.Status]++
					if r.Status != http.StatusOK && answers[name][r.Status] == 1 {
						errs = append(errs, fmt.Errorf("gateway %s: %s", name, r))
					}
					if next == "" && r.Status == http.StatusOK {
						next = sessionCookieOf(r)
					}
				}()
			}
		}
		close(start)
		wg.Wait()
		cancel()
		for _, err := range errs {
			t.Errorf("round %d: GET /api/whoami with the expired cookie: %v", round, err)
		}
		if got := answers["A"][http.StatusOK] + answers["B"][http.StatusOK]; got != 2*perGateway {
			t.Fatalf("round %d: %d of %d parallel calls with one expired cookie (%d per gateway) answered 200; by gateway and status: %v",
				round, got, 2*perGateway, perGateway, answers)
		}
		if got := refreshesAtIssuer(t, gateways) - before; got != 1 {
			t.Fatalf("round %d: the issuer minted %v access tokens by refresh for one expiry of one session on two gateways, want exactly 1", round, got)
		}
		switch {
		case next != "":
			cookie = next
		case store == "cookie":
			t.Fatalf("round %d: no answer set a new session cookie after the refresh", round)
		}
	}
}

// sessionCookieOf is the Cookie header of the session cookies one answer
// set (its __Host-bff chunks), or "" when it set none. Taken from one
// answer alone: the chunks of two answers' cookies do not combine.
func sessionCookieOf(a issuerclient.Answer) string {
	var j issuerclient.Jar
	j.Update(a.Header)
	return j.HeaderWhere(func(name string) bool {
		return name == "__Host-bff" || strings.HasPrefix(name, "__Host-bff.")
	})
}

// refreshesAtIssuer sums bffgate_issuer_tokens_minted_total for access
// tokens of the refresh_token grant over the processes' /metrics (the
// gateways refresh at issuer A, the identifier; B's count stays 0 unless
// a request reaches it).
func refreshesAtIssuer(t *testing.T, procs []*stack.Stack) float64 {
	t.Helper()
	var sum float64
	for _, p := range procs {
		resp, err := testhttp.Client.Get(p.GatewayURL + "/metrics")
		if err != nil {
			t.Fatalf("GET /metrics: %v", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s/metrics: HTTP %d, %v", p.GatewayURL, resp.StatusCode, err)
		}
		for _, line := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(line, "bffgate_issuer_tokens_minted_total{") ||
				!strings.Contains(line, `grant_type="refresh_token"`) || !strings.Contains(line, `kind="access"`) {
				continue
			}
			_, value, _ := strings.Cut(line, "} ")
			n, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("/metrics line %q: %v", line, err)
			}
			sum += n
		}
	}
	return sum
}
