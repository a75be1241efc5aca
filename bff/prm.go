package bff

import (
	"strings"

	"github.com/gofiber/fiber/v2"
)

// prmPath is the well-known path of OAuth 2.0 Protected Resource Metadata
// (RFC 9728 §3): a resource https://gw.example/mcp publishes it at
// https://gw.example/.well-known/oauth-protected-resource/mcp.
const prmPath = "/.well-known/oauth-protected-resource"

// protectedResource is the RFC 9728 §2 metadata document of a route.
type protectedResource struct {
	Resource             string   `json:"resource"`
	AuthorizationServers []string `json:"authorization_servers"`
	ScopesSupported      []string `json:"scopes_supported,omitempty"`
	BearerMethods        []string `json:"bearer_methods_supported"`
}

// protectedResourceMetadata answers GET prmPath + the path of a bearer
// route's resource (RFC 9728 §3.1: the well-known segment goes between
// the host and the resource's path), or prmPath alone for a resource at
// the root. MCP clients find it from the resource_metadata of a 401's
// WWW-Authenticate, or by building the same URL (MCP authorization,
// "Protected Resource Metadata Discovery").
func (g *Gateway) protectedResourceMetadata(c *fiber.Ctx) error {
	rest := strings.TrimPrefix(c.Path(), prmPath)
	rest = strings.TrimSuffix(rest, "/")
	b, ok := g.prm[rest]
	if !ok {
		return writeError(c, newError(fiber.StatusNotFound, "not_found",
			"no protected resource is published at "+c.Path()+": it names no route with auth bearer"))
	}
	doc := protectedResource{
		Resource:             b.resource,
		AuthorizationServers: []string{g.bearer.issuer},
		ScopesSupported:      b.supportedScopes(),
		BearerMethods:        []string{"header"},
	}
	// Public metadata, read by browser-based MCP clients too (the MCP
	// Inspector): any origin may read it, no credentials involved.
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	return c.JSON(doc)
}
