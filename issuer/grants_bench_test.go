package issuer_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/bffgate/bffgate/internal/redistest"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage/redis"
	"github.com/bffgate/bffgate/issuer/token"
)

// onEachStore runs a grant benchmark on every storage engine: bbolt (a
// file of its own, group commit, fsync before the answer) and Redis (the
// rules' optimistic transactions on BFFGATE_TEST_REDIS_URL, under a prefix
// of its own; skipped when the variable is unset).
func onEachStore(b *testing.B, run func(b *testing.B, o envOptions)) {
	b.Run("bolt", func(b *testing.B) { run(b, envOptions{}) })
	b.Run("redis", func(b *testing.B) {
		c := redistest.Client(b)
		st, err := redis.New(c, redis.Config{Prefix: redistest.Prefix(b, c, "")})
		if err != nil {
			b.Fatal(err)
		}
		run(b, envOptions{store: st})
	})
}

// grantWorkers is how many clients the grant benchmarks run at once (the
// issue's measurement: 32 workers, each with its own grant).
const grantWorkers = 32

// postForm sends a form as web (client_secret_basic) from any goroutine;
// it reports a status other than 200 as an error.
func postForm(e *env, path string, form url.Values) (string, error) {
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", basicAuth(webID, webSecret))
	resp, err := e.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %d %s", path, resp.StatusCode, raw)
	}
	return string(raw), nil
}

// runWorkers runs n operations over grantWorkers goroutines, worker w
// doing op(w) until the operations are shared out, and fails b on the
// first error.
func runWorkers(b *testing.B, n int, op func(w int) error) {
	var wg sync.WaitGroup
	errs := make(chan error, grantWorkers)
	for w := range grantWorkers {
		k := n / grantWorkers
		if w < n%grantWorkers {
			k++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range k {
				if err := op(w); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRefreshGrant is the refresh-token grant rate of /token over
// loopback with grantWorkers clients, each rotating its own grant (the
// rotation, the new allowlist record and the grant update are one write
// of the store, durable before the answer), for access, refresh and ID
// tokens signed with ES256 and with RS256, and with RS256 access and ID
// tokens beside sealed refresh tokens (issuer.tokens.refresh_format:
// sealed, one RSA signature fewer per grant).
func BenchmarkRefreshGrant(b *testing.B) {
	onEachStore(b, benchmarkRefreshGrant)
}

func benchmarkRefreshGrant(b *testing.B, o envOptions) {
	for _, tc := range []struct {
		name, alg string
		refresh   token.RefreshFormat
	}{
		{"ES256", "ES256", token.RefreshSigned},
		{"RS256", "RS256", token.RefreshSigned},
		{"ES256-sealed", "ES256", token.RefreshSealed},
		{"RS256-sealed", "RS256", token.RefreshSealed},
	} {
		b.Run(tc.name, func(b *testing.B) {
			o.cfg = quiet(func(c *issuer.Config) {
				c.TokenAlg, c.IDTokenAlg, c.RefreshTokenFormat = tc.alg, tc.alg, tc.refresh
			})
			e := start(b, o)
			refresh := make([]string, grantWorkers)
			for w := range refresh {
				_, _, tok := e.loginTokens(webID)
				refresh[w] = tok.refresh
			}
			b.ResetTimer()
			cpu0, cpuOK := processCPU()
			runWorkers(b, b.N, func(w int) error {
				raw, err := postForm(e, "/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh[w]}})
				if err != nil {
					return err
				}
				next := jsonString(raw, "refresh_token")
				if next == "" {
					return fmt.Errorf("refresh answered no refresh token: %s", raw)
				}
				refresh[w] = next
				return nil
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "grants/s")
			if cpu1, ok := processCPU(); ok && cpuOK {
				// Client and server share the process: this is the CPU of
				// the whole exchange, the grant's cost on a busy machine.
				b.ReportMetric(float64((cpu1-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/grant")
			}
		})
	}
}

// BenchmarkTokenExchange is the token-exchange grant rate of /token (RFC
// 8693) over loopback with grantWorkers clients, each exchanging its own
// user's access token for orders-api with web's client-credentials token
// as actor (delegation): two tokens verified as introspection verifies
// them (signature, the denylist by jti and by grant), one access token
// signed. Nothing is written to the store. ES256 and RS256, as
// BenchmarkRefreshGrant.
func BenchmarkTokenExchange(b *testing.B) {
	for _, alg := range []string{"ES256", "RS256"} {
		b.Run(alg, func(b *testing.B) {
			e := start(b, envOptions{cfg: quiet(func(c *issuer.Config) {
				withExchange(c)
				c.TokenAlg, c.IDTokenAlg = alg, alg
			})})
			actor := e.clientToken(webBasic)
			subjects := make([]string, grantWorkers)
			for w := range subjects {
				_, _, tok := e.loginTokens(webID)
				subjects[w] = tok.access
			}
			b.ResetTimer()
			runWorkers(b, b.N, func(w int) error {
				raw, err := postForm(e, "/token", url.Values{
					"grant_type": {issuer.GrantTokenExchange}, "subject_token": {subjects[w]}, "subject_token_type": {issuer.TokenTypeAccess},
					"actor_token": {actor}, "actor_token_type": {issuer.TokenTypeAccess}, "audience": {ordersID},
				})
				if err != nil {
					return err
				}
				if jsonString(raw, "access_token") == "" {
					return fmt.Errorf("token exchange answered no access token: %s", raw)
				}
				return nil
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
		})
	}
}

// BenchmarkCodeExchangeParallel is BenchmarkCodeExchange with
// grantWorkers clients at once.
func BenchmarkCodeExchangeParallel(b *testing.B) {
	onEachStore(b, benchmarkCodeExchangeParallel)
}

func benchmarkCodeExchangeParallel(b *testing.B, o envOptions) {
	o.cfg = quiet(nil)
	e := start(b, o)
	fl := newFlow(e.oauth2Config(e.provider(), webID))
	br := e.browser()
	codes := make(chan string, b.N)
	for range b.N {
		codes <- br.code(fl.authURL())
	}
	close(codes)
	b.ResetTimer()
	runWorkers(b, b.N, func(int) error {
		_, err := postForm(e, "/token", url.Values{"grant_type": {"authorization_code"}, "code": {<-codes}, "redirect_uri": {webRedirect}, "code_verifier": {fl.verifier}})
		return err
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
}

// BenchmarkRevoke is the revocation rate of /revoke (RFC 7009) with
// grantWorkers clients at once, each revoking access tokens minted before
// the timer starts: one denylist write (and its change-log entry) per
// revocation, durable before the answer.
func BenchmarkRevoke(b *testing.B) {
	onEachStore(b, benchmarkRevoke)
}

func benchmarkRevoke(b *testing.B, o envOptions) {
	o.cfg = quiet(nil)
	e := start(b, o)
	codec := e.srv.Codec()
	toks := make(chan string, b.N)
	for range b.N {
		cl := benchClaims(e)
		cl.GrantID = token.NewID()
		t, err := codec.Mint(token.Access, cl)
		if err != nil {
			b.Fatal(err)
		}
		toks <- t
	}
	close(toks)
	b.ResetTimer()
	runWorkers(b, b.N, func(int) error {
		_, err := postForm(e, "/revoke", url.Values{"token": {<-toks}, "token_type_hint": {"access_token"}})
		return err
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "revocations/s")
}

// jsonString pulls one string member out of a JSON object.
func jsonString(raw, key string) string {
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		return ""
	}
	s, _ := m[key].(string)
	return s
}
