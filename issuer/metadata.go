package issuer

import (
	"github.com/gofiber/fiber/v2"
)

// pathOAuthMetadata is the well-known suffix of the authorization server
// metadata (RFC 8414 §3).
const pathOAuthMetadata = "/.well-known/oauth-authorization-server"

// asMetadata is the authorization server metadata of RFC 8414 §2: the
// OpenID configuration (which RFC 8414 §2 defines as a superset) plus the
// members an OAuth-only client such as an MCP client reads.
type asMetadata struct {
	discovery
	// RegistrationEndpoint is RFC 7591's endpoint; present when dynamic
	// registration is on (Config.Registration).
	RegistrationEndpoint string `json:"registration_endpoint,omitempty"`
	// ClientIDMetadataDocumentSupported announces that an https URL is
	// accepted as a client_id and fetched (draft-ietf-oauth-client-id-
	// metadata-document §4); present when Config.ClientMetadata is on.
	ClientIDMetadataDocumentSupported bool `json:"client_id_metadata_document_supported,omitempty"`
}

func (s *Server) asMetadata() asMetadata {
	return asMetadata{discovery: s.discovery(), ClientIDMetadataDocumentSupported: s.cfg.ClientMetadata.Enabled,
		RegistrationEndpoint: s.registrationEndpoint()}
}

// handleOAuthMetadata serves RFC 8414 metadata. With an issuer URL that
// has a path (https://idp.example/tenant), RFC 8414 §3.1 inserts the
// well-known suffix between host and path
// (/.well-known/oauth-authorization-server/tenant); the app routes that
// form at its root, and also the appended form under the issuer's path,
// which older clients (and the MCP SDK's fallbacks) ask for. Both carry
// the same document: its issuer member is what a client compares.
func (s *Server) handleOAuthMetadata(c *fiber.Ctx) error {
	c.Set(fiber.HeaderCacheControl, "public, max-age=300")
	c.Set(fiber.HeaderAccessControlAllowOrigin, "*")
	return c.JSON(s.asMetadata())
}

// mountMetadata adds the RFC 8414 routes to app (the root, not the
// issuer's path group).
func (s *Server) mountMetadata(app *fiber.App, r fiber.Router) {
	if s.cfg.Registration.Enabled {
		r.Post(pathRegister, s.handleRegister)
		r.Get(pathRegister+"/:id", s.handleRegistration)
		r.Delete(pathRegister+"/:id", s.handleRegistration)
	}
	if s.basePath == "" {
		app.Get(pathOAuthMetadata, s.handleOAuthMetadata)
		return
	}
	app.Get(pathOAuthMetadata+s.basePath, s.handleOAuthMetadata)
	r.Get(pathOAuthMetadata, s.handleOAuthMetadata)
	// OpenID Connect Discovery §4 appends; RFC 8414 §5 lets a server that
	// serves both also offer the OpenID configuration by insertion, which
	// the MCP authorization spec has clients try second.
	app.Get(pathDiscovery+s.basePath, s.handleDiscovery)
}
