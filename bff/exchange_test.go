package bff

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/bffgate/bffgate/bff/proxy"
	"github.com/bffgate/bffgate/internal/testhttp"
	"github.com/bffgate/bffgate/issuer"
)

// ordersAPI is an upstream that accepts only tokens exchanged for it: it
// verifies each with the issuer's JWKS and checks aud and act.
type ordersAPI struct {
	srv      *httptest.Server
	verifier *oidc.IDTokenVerifier
	mu       sync.Mutex
	tokens   map[string]bool // distinct tokens seen
	calls    int
	reject   int // answer the next reject calls 401 invalid_token
}

// exchangedSeen is what ordersAPI answers.
type exchangedSeen struct {
	Sub, ClientID, Scope, JTI string
	Aud                       []string
	Act                       map[string]any
}

func newOrdersAPI(t testing.TB, issuerURL, aud string, clk *clock) *ordersAPI {
	o := &ordersAPI{tokens: map[string]bool{}}
	ks := oidc.NewRemoteKeySet(context.Background(), issuerURL+"/jwks")
	o.verifier = oidc.NewVerifier(issuerURL, ks, &oidc.Config{ClientID: aud, Now: clk.Now, SupportedSigningAlgs: []string{"RS256"}})
	o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		idt, err := o.verifier.Verify(r.Context(), tok)
		o.mu.Lock()
		reject := o.reject > 0
		if reject {
			o.reject--
		}
		o.mu.Unlock()
		if !ok || err != nil || reject {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		var cl struct {
			ClientID string         `json:"client_id"`
			Scope    string         `json:"scope"`
			JTI      string         `json:"jti"`
			Act      map[string]any `json:"act"`
		}
		_ = idt.Claims(&cl)
		o.mu.Lock()
		o.tokens[tok] = true
		o.calls++
		o.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(exchangedSeen{Sub: idt.Subject, ClientID: cl.ClientID, Scope: cl.Scope, JTI: cl.JTI, Aud: idt.Audience, Act: cl.Act})
	}))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *ordersAPI) distinct() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.tokens)
}

// TestRouteTokenExchange: a route with token.exchange sends the upstream
// a token made for it (aud orders-api, act naming the gateway), never the
// session's; 100 parallel calls of a new session make one exchange; a
// refresh of the session makes a new one; a refused exchange is 403 JSON
// naming the route; an impersonation-only route is refused by a policy of
// delegation only; the provider down is 503.
func TestRouteTokenExchange(t *testing.T) {
	t.Parallel()
	for _, kind := range storeKinds {
		t.Run(string(kind), func(t *testing.T) {
			t.Parallel()
			var orders *ordersAPI
			ordersURL := make(chan string, 1)
			e := newEnv(t, kind, envOptions{
				issuer: func(c *issuer.Config) {
					c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"orders-api"}}
				},
				gateway: func(c *Config) {
					u := <-ordersURL
					c.Routes = append(c.Routes,
						Route{Route: proxy.Route{Prefix: "/orders/", Upstream: u}, Policy: PolicyUser,
							Token: RouteToken{Exchange: RouteExchange{Audience: "orders-api", Scope: "openid profile", Actor: ActorGateway}}},
						Route{Route: proxy.Route{Prefix: "/refused/", Upstream: u}, Policy: PolicyUser,
							Token: RouteToken{Exchange: RouteExchange{Audience: "payments-api", Actor: ActorGateway}}},
						Route{Route: proxy.Route{Prefix: "/imp/", Upstream: u}, Policy: PolicyUser,
							Token: RouteToken{Exchange: RouteExchange{Audience: "orders-api"}}},
					)
				},
				beforeGateway: func(e *env) {
					orders = newOrdersAPI(t, e.issuer, "orders-api", e.clock)
					ordersURL <- orders.srv.URL
				},
			})
			b := e.browser()
			b.mustLogin("alice", alicePassword)
			session := b.session().AccessToken

			granted := func() float64 {
				return e.issuerCount("bffgate_issuer_token_exchanges_total", map[string]string{"decision": "granted"})
			}
			var wg sync.WaitGroup
			results := make([]result, 100)
			for i := range results {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = b.api(http.MethodGet, "/orders/list")
				}()
			}
			wg.Wait()
			for i, r := range results {
				if r.status != http.StatusOK {
					t.Fatalf("call %d: %d %s", i, r.status, clip(r.body))
				}
			}
			if n := granted(); n != 1 {
				t.Fatalf("%v exchanges for 100 parallel calls of one session, want 1", n)
			}
			if n := orders.distinct(); n != 1 {
				t.Fatalf("the upstream saw %d distinct tokens, want 1", n)
			}
			var seen exchangedSeen
			results[0].json(t, &seen)
			if seen.Sub != "user-alice" || len(seen.Aud) != 1 || seen.Aud[0] != "orders-api" || seen.ClientID != testClientID || seen.Scope != "openid profile" {
				t.Fatalf("exchanged token at the upstream: %+v", seen)
			}
			if seen.Act["sub"] != issuer.ClientSubject(testClientID) || seen.Act["client_id"] != testClientID {
				t.Fatalf("act %v, want the gateway's client", seen.Act)
			}
			orders.mu.Lock()
			sawSession := orders.tokens[session]
			orders.mu.Unlock()
			if sawSession {
				t.Fatal("the upstream received the session's own access token")
			}

			// A refresh of the session (its access token expired) makes a
			// new exchange, of the new token.
			e.clock.Advance(5 * time.Minute)
			r := b.api(http.MethodGet, "/orders/list")
			if r.status != http.StatusOK {
				t.Fatalf("after refresh: %d %s", r.status, clip(r.body))
			}
			if b.session().AccessToken == session {
				t.Fatal("the session was not refreshed")
			}
			if n := granted(); n != 2 {
				t.Fatalf("%v exchanges after the session refreshed, want 2", n)
			}
			var again exchangedSeen
			r.json(t, &again)
			if again.JTI == seen.JTI {
				t.Fatal("the upstream got the exchanged token of the old session token after a refresh")
			}

			// Refused by the issuer: 403 JSON naming the route and reason.
			r = b.api(http.MethodGet, "/refused/x")
			var body map[string]string
			r.json(t, &body)
			if r.status != http.StatusForbidden || body["error"] != "exchange_refused" || body["route"] != "/refused/" ||
				!strings.Contains(body["error_description"], "invalid_target") || !strings.Contains(body["error_description"], "payments-api") {
				t.Fatalf("refused exchange: %d %s", r.status, r.body)
			}
			// Impersonation refused by a delegation-only policy.
			r = b.api(http.MethodGet, "/imp/x")
			r.json(t, &body)
			if r.status != http.StatusForbidden || body["route"] != "/imp/" || !strings.Contains(body["error_description"], "unauthorized_client") {
				t.Fatalf("impersonation: %d %s", r.status, r.body)
			}
			// The session is kept after a refusal.
			if r := b.api(http.MethodGet, "/orders/list"); r.status != http.StatusOK {
				t.Fatalf("after a refusal: %d", r.status)
			}

			// An upstream 401 to the exchanged token: the session is
			// refreshed (forced) and its new token exchanged, once.
			before := granted()
			orders.mu.Lock()
			orders.reject = 1
			orders.mu.Unlock()
			r = b.api(http.MethodGet, "/orders/list")
			if r.status != http.StatusOK || granted() != before+1 {
				t.Fatalf("after the upstream refused the exchanged token: %d %s, %v exchanges (want %v)", r.status, clip(r.body), granted(), before+1)
			}
			before = granted()
			e.clock.Advance(5 * time.Minute)
			e.stopIssuer()
			r = b.api(http.MethodGet, "/orders/list")
			r.json(t, &body)
			if r.status != http.StatusServiceUnavailable || body["error"] != "provider_unavailable" {
				t.Fatalf("provider down: %d %s", r.status, r.body)
			}
			if granted() != before {
				t.Fatal("an exchange was counted while the issuer was down")
			}
		})
	}
}

// TestRouteExchangeConfig: a route's token.exchange errors name the key.
func TestRouteExchangeConfig(t *testing.T) {
	t.Parallel()
	route := func(p Policy, e RouteExchange) func(*Config) {
		return func(c *Config) {
			c.Routes = []Route{{Route: proxy.Route{Prefix: "/api/", Upstream: "http://127.0.0.1:1"}, Policy: p, Token: RouteToken{Exchange: e}}}
		}
	}
	for _, tc := range []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"no target", route(PolicyUser, RouteExchange{Scope: "openid"}), "routes[0].token.exchange.audience"},
		{"relative resource", route(PolicyUser, RouteExchange{Resource: "/orders"}), "routes[0].token.exchange.resource"},
		{"resource with a fragment", route(PolicyUser, RouteExchange{Resource: "https://orders.example.test/#x"}), "routes[0].token.exchange.resource"},
		{"unknown actor", route(PolicyUser, RouteExchange{Audience: "orders-api", Actor: "user"}), "routes[0].token.exchange.actor"},
		{"bad scope", route(PolicyUser, RouteExchange{Audience: "orders-api", Scope: `a"b`}), "routes[0].token.exchange.scope"},
		{"scope with a control character", route(PolicyUser, RouteExchange{Audience: "orders-api", Scope: "orders:read\torders:write"}), "routes[0].token.exchange.scope"},
		{"scope not ASCII", route(PolicyUser, RouteExchange{Audience: "orders-api", Scope: "commandes:lireé"}), "routes[0].token.exchange.scope"},
		{"no session", route(PolicyClient, RouteExchange{Audience: "orders-api"}), "routes[0].token.exchange.audience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			tc.edit(&cfg)
			if err := cfg.Validate(); !hasField(err, tc.field) {
				t.Fatalf("Validate() = %v, want a FieldError at %s", err, tc.field)
			}
		})
	}
	cfg := validConfig()
	route(PolicyUserOptional, RouteExchange{Audience: "orders-api", Resource: "https://orders.example.test/", Scope: "orders:read", Actor: ActorGateway})(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a valid exchange route: %v", err)
	}
}

// TestRouteExchangeRevokedSession: the session's grant revoked at the
// provider: the exchange is refused (invalid_grant), the gateway forces
// one refresh, the provider refuses it, and the session ends (401
// session_expired), rather than answering 403 until its token expires.
func TestRouteExchangeRevokedSession(t *testing.T) {
	t.Parallel()
	var orders *ordersAPI
	e := newEnv(t, kindBolt, envOptions{
		issuer: func(c *issuer.Config) {
			c.Clients[0].TokenExchange = issuer.TokenExchange{Allowed: true, Audiences: []string{"orders-api"}, Impersonation: true}
		},
		beforeGateway: func(e *env) { orders = newOrdersAPI(t, e.issuer, "orders-api", e.clock) },
		gateway: func(c *Config) {
			c.Routes = append(c.Routes, Route{Route: proxy.Route{Prefix: "/orders/", Upstream: orders.srv.URL}, Policy: PolicyUser,
				Token: RouteToken{Exchange: RouteExchange{Audience: "orders-api"}}})
		},
	})
	b := e.browser()
	b.mustLogin("alice", alicePassword)
	form := url.Values{"token": {b.session().RefreshToken}, "token_type_hint": {"refresh_token"}}
	req, _ := http.NewRequest(http.MethodPost, e.issuer+"/revoke", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(testClientID, testClientSecret)
	res, err := testhttp.Client.Do(req)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("revoke at the issuer: %v %v", res, err)
	}
	res.Body.Close()
	r := b.api(http.MethodGet, "/orders/list")
	var body map[string]string
	r.json(t, &body)
	if r.status != http.StatusUnauthorized || body["error"] != "session_expired" {
		t.Fatalf("exchange of a revoked session: %d %s, want 401 session_expired", r.status, r.body)
	}
}
