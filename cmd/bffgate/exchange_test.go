package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Token exchange keys are decoded strictly and their errors name the
// YAML key path: the issuer's client policy, trusted issuers, and the
// gateway route's token.exchange.
func TestExchangeConfigErrors(t *testing.T) {
	t.Parallel()
	const client = "issuer:\n  clients:\n    - id: api\n      secret: api-secret-0123456789\n      grant_types: [client_credentials]\n"
	for _, tc := range []struct {
		name, file, key string
	}{
		{"policy without allowed", client + "      token_exchange: {audiences: [orders-api]}\n", "issuer.clients[0].token_exchange.allowed"},
		{"unknown policy key", client + "      token_exchange: {allowed: true, audience: [orders-api]}\n", "issuer.clients[0].token_exchange.audience"},
		{"bad max_lifetime", client + "      token_exchange: {allowed: true, audiences: [a], max_lifetime: soon}\n", "issuer.clients[0].token_exchange.max_lifetime"},
		{"relative resource", client + "      token_exchange: {allowed: true, resources: [/orders]}\n", "issuer.clients[0].token_exchange.resources[0]"},
		{"trusted issuer alg", "issuer:\n  trusted_issuers:\n    - {issuer: https://idp.example.com, jwks_url: https://idp.example.com/jwks, audience: [x], algorithms: [HS256]}\n", "issuer.trusted_issuers[0].algorithms[0]"},
		{"trusted issuer mode", "issuer:\n  trusted_issuers:\n    - {issuer: https://idp.example.com, jwks_url: https://idp.example.com/jwks, audience: [x], subject: {mode: copy}}\n", "issuer.trusted_issuers[0].subject.mode"},
		{"trusted issuer unknown key", "issuer:\n  trusted_issuers:\n    - {issuer: https://idp.example.com, jwks: https://idp.example.com/jwks}\n", "issuer.trusted_issuers[0].jwks"},
		{"route exchange actor", "gateway:\n  routes:\n    - {prefix: /orders/, upstream: http://127.0.0.1:7000, token: {exchange: {audience: orders-api, actor: me}}}\n", "gateway.routes[0].token.exchange.actor"},
		{"route exchange without a session", "gateway:\n  routes:\n    - {prefix: /orders/, upstream: http://127.0.0.1:7000, policy: client, token: {exchange: {audience: orders-api}}}\n", "gateway.routes[0].token.exchange.audience"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := loadConfig(writeFile(t, tc.file), nil)
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %v does not name %s", err, tc.key)
			}
		})
	}
}

// The gateway's own client at the embedded issuer may exchange for
// exactly the targets its routes name.
func TestGatewayExchangePolicy(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(writeFile(t, `gateway:
  routes:
    - {prefix: /orders/, upstream: http://127.0.0.1:7000, token: {exchange: {audience: orders-api, actor: gateway}}}
    - {prefix: /stock/, upstream: http://127.0.0.1:7001, token: {exchange: {resource: "https://stock.example.com/", scope: openid}}}
    - {prefix: /plain/, upstream: http://127.0.0.1:7002}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.gatewayExchangePolicy()
	if !p.Allowed || len(p.Audiences) != 1 || p.Audiences[0] != "orders-api" || len(p.Resources) != 1 || p.Resources[0] != "https://stock.example.com/" || !p.Impersonation {
		t.Fatalf("gateway exchange policy %+v", p)
	}
	if err := cfg.issuerConfig("gateway-secret-0123456789abcdef").Validate(); err != nil {
		t.Fatalf("the issuer configuration with the gateway's policy: %v", err)
	}
}

// The README's STS example loads.
func TestREADMEExchangeConfig(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- sts-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no sts-config yaml block")
	}
	cfg, err := loadConfig(writeFile(t, string(m[1])), nil)
	if err != nil {
		t.Fatalf("the README's STS configuration: %v", err)
	}
	if len(cfg.Issuer.TrustedIssuers) != 1 || len(cfg.Issuer.Clients) != 1 || !cfg.Issuer.Clients[0].TokenExchange.Allowed {
		t.Errorf("issuer %+v", cfg.Issuer)
	}
}
