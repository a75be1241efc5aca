package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bffgate/bffgate/issuer"
)

// The gateway's bearer routes become resources of the embedded issuer,
// with their non-OpenID scopes, and its client their resource server; a
// resource listed by hand is kept as listed; route key errors name the
// YAML path.
func TestGatewayBearerResources(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig(writeFile(t, `issuer:
  resources:
    - {url: "http://127.0.0.1:8080/listed", name: Listed, scopes: [listed:read]}
gateway:
  routes:
    - {prefix: /mcp/, upstream: http://127.0.0.1:7000, policy: client, auth: [bearer], scopes: [profile, mcp:tools],
       mcp: {tools: {scopes: {admin_*: [mcp:admin]}}}}
    - {prefix: /listed/, upstream: http://127.0.0.1:7001, policy: none, auth: [bearer]}
    - {prefix: /api/, upstream: http://127.0.0.1:7002}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	is := cfg.issuerConfig("gateway-secret-0123456789abcdef")
	if err := is.Validate(); err != nil {
		t.Fatalf("the issuer configuration with the gateway's resources: %v", err)
	}
	if len(is.Resources) != 2 || is.Resources[0].Name != "Listed" || is.Resources[1].URL != "http://127.0.0.1:8080/mcp" ||
		strings.Join(is.Resources[1].Scopes, " ") != "mcp:tools mcp:admin" {
		t.Fatalf("issuer resources %+v", is.Resources)
	}
	gw := is.Clients[slices.IndexFunc(is.Clients, func(c issuer.Client) bool { return c.ID == embeddedClientID })]
	if strings.Join(gw.Resources, " ") != "http://127.0.0.1:8080/mcp http://127.0.0.1:8080/listed" {
		t.Fatalf("the gateway client's resources %v", gw.Resources)
	}
	for _, tc := range []struct{ name, file, key string }{
		{"auth", "gateway:\n  routes:\n    - {prefix: /mcp/, upstream: http://127.0.0.1:7000, policy: client, auth: [cookie]}\n", "gateway.routes[0].auth[0]"},
		{"passthrough", "gateway:\n  routes:\n    - {prefix: /mcp/, upstream: http://127.0.0.1:7000, auth: [bearer]}\n", "gateway.routes[0].auth"},
		{"mcp key", "gateway:\n  routes:\n    - {prefix: /mcp/, upstream: http://127.0.0.1:7000, policy: client, auth: [bearer], mcp: {tool: {}}}\n", "gateway.routes[0].mcp.tool"},
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

// The README's MCP route example loads, and its resource reaches the
// embedded issuer with the route's scopes.
func TestREADMEMCPConfig(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- mcp-gateway-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no mcp-gateway-config yaml block")
	}
	cfg, err := loadConfig(writeFile(t, string(m[1])), nil)
	if err != nil {
		t.Fatalf("the README's MCP route: %v", err)
	}
	is := cfg.issuerConfig("gateway-secret-0123456789abcdef")
	if err := is.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(is.Resources) != 1 || strings.Join(is.Resources[0].Scopes, " ") != "mcp:tools mcp:admin" {
		t.Fatalf("issuer resources %+v", is.Resources)
	}
}
