package issuer

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/bffgate/bffgate/issuer/protocol"
)

// Resource is a protected resource clients may ask tokens for with a
// resource indicator (RFC 8707): an MCP server or an API behind the
// gateway. Its yaml tags are the keys of issuer.resources[].
type Resource struct {
	// URL is the resource indicator, compared as a string: an absolute
	// URI without a fragment (RFC 8707 §2), the resource of the
	// resource's protected resource metadata (RFC 9728 §2), e.g.
	// https://gateway.example/mcp. Required, unique.
	URL string `yaml:"url"`
	// Name is shown on the consent page; empty means URL.
	Name string `yaml:"name"`
	// Scopes are the scopes this resource defines (e.g. mcp:tools,
	// mcp:admin): a client may ask for them only together with this
	// resource, and they reach the access token's scope claim. The
	// issuer's own scopes (openid, profile, email, offline_access,
	// groups, roles) stay available per the client's scopes.
	Scopes []string `yaml:"scopes"`
}

// resourceOf returns the registered resource with URL u, or nil.
func (s *Server) resourceOf(u string) *Resource {
	for i := range s.cfg.Resources {
		if s.cfg.Resources[i].URL == u {
			return &s.cfg.Resources[i]
		}
	}
	return nil
}

// requestedResource reads the resource parameter of an authorization or
// token request (RFC 8707 §2): "" when absent, else a resource registered
// in issuer.resources that the client may ask for, or invalid_target.
// One resource per request: the parameters of these requests appear once
// (checkParams), and an MCP client names the one server it connects to.
func (s *Server) requestedResource(cl *client, p url.Values) (string, error) {
	if !p.Has("resource") {
		return "", nil
	}
	r := p.Get("resource")
	if err := checkResource(r); err != nil {
		return "", protocol.ErrInvalidTarget.WithDescription("resource %v", err)
	}
	if s.resourceOf(r) == nil {
		return "", protocol.ErrInvalidTarget.WithDescription("resource %q is not a resource of this issuer (issuer.resources)", clip(r, 128))
	}
	if len(cl.Resources) > 0 && !slices.Contains(cl.Resources, r) {
		return "", protocol.ErrInvalidTarget.WithDescription("client %q may not obtain tokens for resource %q (its resources: %s)", cl.ID, clip(r, 128), strings.Join(cl.Resources, ", "))
	}
	return r, nil
}

// checkScopeFor checks a requested scope for a client and a resource
// (""): the resource's own scopes are allowed with it, the rest must be
// scopes the client may request (client.checkScope).
func (s *Server) checkScopeFor(cl *client, scope, resource string) error {
	if !protocol.ValidScope(scope) {
		return protocol.ErrInvalidScope.WithDescription("the scope parameter holds characters RFC 6749 §3.3 does not allow")
	}
	var res *Resource
	if resource != "" {
		res = s.resourceOf(resource)
	}
	var rest []string
	for _, sc := range protocol.ParseScope(scope) {
		switch {
		case res != nil && slices.Contains(res.Scopes, sc):
		case slices.Contains(supportedScopes, sc):
			rest = append(rest, sc)
		default:
			if owner := s.scopeOwner(sc); owner != "" {
				if res == nil {
					return protocol.ErrInvalidScope.WithDescription("scope %q belongs to resource %q: name it with the resource parameter (RFC 8707)", clip(sc, 64), owner)
				}
				return protocol.ErrInvalidScope.WithDescription("scope %q is not a scope of resource %q (its scopes: %s)", clip(sc, 64), res.URL, strings.Join(res.Scopes, ", "))
			}
			rest = append(rest, sc) // unknown: checkScope names it
		}
	}
	return cl.checkScope(strings.Join(rest, " "))
}

// scopeOwner returns the URL of the first resource defining scope sc.
func (s *Server) scopeOwner(sc string) string {
	for _, r := range s.cfg.Resources {
		if slices.Contains(r.Scopes, sc) {
			return r.URL
		}
	}
	return ""
}

// tokenAudience is the aud of an access token for client cl: the
// resource it was asked for (RFC 8707 §2.2), else the client's audience.
func tokenAudience(cl *client, resource string) []string {
	if resource != "" {
		return []string{resource}
	}
	return cl.Audience
}

// narrowResource applies a token request's resource parameter to what
// the authorization (code) or grant (refresh) holds: absent keeps it, the
// same value keeps it, anything else would widen or move the token's
// audience and is invalid_target (RFC 8707 §2.2).
func (s *Server) narrowResource(cl *client, form url.Values, granted string) (string, error) {
	r, err := s.requestedResource(cl, form)
	switch {
	case err != nil:
		return "", err
	case r == "" || r == granted:
		return granted, nil
	case granted == "":
		return "", protocol.ErrInvalidTarget.WithDescription("resource %q was not part of the authorization; a token request may narrow the resource, never add one (RFC 8707 §2.2)", clip(r, 128))
	}
	return "", protocol.ErrInvalidTarget.WithDescription("resource %q differs from the authorized resource %q; a token request may narrow the resource, never widen it (RFC 8707 §2.2)", clip(r, 128), granted)
}

// validateResources checks issuer.resources.
func validateResources(rs []Resource) ([]Resource, error) {
	rs = slices.Clone(rs)
	seen := map[string]bool{}
	for i := range rs {
		r := &rs[i]
		path := fmt.Sprintf("resources[%d]", i)
		if err := checkResource(r.URL); err != nil {
			return nil, &FieldError{Path: path + ".url", Msg: err.Error()}
		}
		if u, _ := url.Parse(r.URL); u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())) {
			return nil, &FieldError{Path: path + ".url", Msg: fmt.Sprintf("%q must be https (or http on a loopback host): MCP clients refuse a resource over plain http", r.URL)}
		}
		if seen[r.URL] {
			return nil, &FieldError{Path: path + ".url", Msg: fmt.Sprintf("%q is listed twice", r.URL)}
		}
		seen[r.URL] = true
		r.Scopes = slices.Clone(r.Scopes)
		for j, sc := range r.Scopes {
			switch {
			case sc == "" || !protocol.ValidScope(sc) || strings.Contains(sc, " "):
				return nil, &FieldError{Path: fmt.Sprintf("%s.scopes[%d]", path, j), Msg: fmt.Sprintf("%q is not a scope token (RFC 6749 §3.3)", sc)}
			case slices.Contains(supportedScopes, sc):
				return nil, &FieldError{Path: fmt.Sprintf("%s.scopes[%d]", path, j), Msg: fmt.Sprintf("%q is one of the issuer's own scopes; list only the resource's scopes", sc)}
			}
		}
	}
	return rs, nil
}

// resourceAllowed reports whether aud is a registered resource client cl
// may hold tokens for (checkAudience's rule for RFC 8707 tokens).
func (s *Server) resourceAllowed(cl *client, aud string) bool {
	return s.resourceOf(aud) != nil && (len(cl.Resources) == 0 || slices.Contains(cl.Resources, aud))
}

// servesResource reports whether a confidential client names one of aud
// in its resources: the resource server (or the gateway in front of it)
// that introspects the tokens clients got for that resource (RFC 7662
// §4: the caller must be one the token is meant for).
func (c *client) servesResource(aud []string) bool {
	if c.public() || len(c.Resources) == 0 {
		return false
	}
	return slices.ContainsFunc(aud, func(a string) bool { return slices.Contains(c.Resources, a) })
}

// scopesSupported is the metadata's scopes_supported (RFC 8414 §2): the
// issuer's scopes, then each resource's, once.
func (s *Server) scopesSupported() []string {
	out := slices.Clone(supportedScopes)
	for _, r := range s.cfg.Resources {
		for _, sc := range r.Scopes {
			if !slices.Contains(out, sc) {
				out = append(out, sc)
			}
		}
	}
	return out
}
