package bff_test

import (
	"fmt"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/bff/proxy"
)

// A route in front of an MCP server: bearer tokens for its resource with
// the mcp:tools scope, the gateway's own token upstream, delete_* tools
// denied and admin_* tools only with mcp:admin.
func ExampleRoute_mcp() {
	r := bff.Route{
		Route:  proxy.Route{Prefix: "/mcp/", Upstream: "http://mcp-server.internal:3000"},
		Policy: bff.PolicyClient,
		Bearer: bff.RouteBearer{Auth: []bff.AuthMethod{bff.AuthBearer}, Scopes: []string{"mcp:tools"}},
		MCP: bff.MCPConfig{Tools: bff.MCPToolRules{
			Deny:   []string{"delete_*"},
			Scopes: map[string][]string{"admin_*": {"mcp:admin"}},
		}},
	}
	cfg := bff.DefaultConfig()
	cfg.PublicURL = "https://gw.example.com"
	cfg.Provider.IssuerURL = "https://login.example.com"
	cfg.Provider.ClientID = "gateway"
	cfg.Routes = []bff.Route{r}
	fmt.Println(cfg.Validate())
	fmt.Println(r.ResourceURL(cfg.PublicURL))
	fmt.Println(r.BearerScopes())
	// Output:
	// <nil>
	// https://gw.example.com/mcp
	// [mcp:tools mcp:admin]
}
