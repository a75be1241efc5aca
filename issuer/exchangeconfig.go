package issuer

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// GrantTokenExchange is the grant type of OAuth 2.0 Token Exchange (RFC
// 8693 §2.1).
const GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// Token type identifiers (RFC 8693 §3).
const (
	TokenTypeAccess  = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeRefresh = "urn:ietf:params:oauth:token-type:refresh_token"
	TokenTypeID      = "urn:ietf:params:oauth:token-type:id_token"
	TokenTypeJWT     = "urn:ietf:params:oauth:token-type:jwt"
)

// TokenExchange is a client's token exchange policy (RFC 8693): whether it
// may use the grant, for which targets, and how. Its yaml tags are the
// keys of issuer.clients[].token_exchange.
//
// The zero value allows nothing. A client with Allowed set may exchange a
// token issued to it (or whose aud names it) for a token whose aud is
// exactly the audience and resource values it asks for, each of which
// must be listed here (RFC 8693 §2.2.2 invalid_target otherwise).
type TokenExchange struct {
	// Allowed lets the client use the token-exchange grant.
	Allowed bool `yaml:"allowed"`
	// Audiences are the logical target names (the audience parameter,
	// RFC 8693 §2.1) the client may ask for, e.g. orders-api.
	Audiences []string `yaml:"audiences"`
	// Resources are the target URIs (the resource parameter, RFC 8707
	// §2: absolute, no fragment) the client may ask for, e.g.
	// https://orders.example.com/.
	Resources []string `yaml:"resources"`
	// Impersonation lets the client exchange without an actor_token: the
	// issued token then acts as the subject with no act claim (RFC 8693
	// §1.1). Off, every exchange must name an actor (delegation), and the
	// issued token records it in act.
	Impersonation bool `yaml:"impersonation"`
	// MaxLifetime caps the issued token's lifetime; 0 means the issuer's
	// access token lifetime. It is also capped at the subject token's
	// remaining life.
	MaxLifetime time.Duration `yaml:"max_lifetime"`
}

// allows reports whether target is one of the policy's audiences or
// resources.
func (p *TokenExchange) allows(target string) bool {
	return slices.Contains(p.Audiences, target) || slices.Contains(p.Resources, target)
}

// validateExchange checks a client's token_exchange policy (fillClient's
// part for it).
func validateExchange(c *Client) error {
	p := &c.TokenExchange
	p.Audiences, p.Resources = slices.Clone(p.Audiences), slices.Clone(p.Resources)
	if !p.Allowed {
		if len(p.Audiences) > 0 || len(p.Resources) > 0 || p.Impersonation || p.MaxLifetime != 0 {
			return ferr(".token_exchange.allowed", "is false but the policy is set; set allowed: true to let the client exchange tokens, or remove token_exchange")
		}
		return nil
	}
	if c.Secret == "" && !hasKeys(c) && !isSPIFFEID(c.ID) {
		return ferr(".token_exchange.allowed", "token exchange needs a confidential client (set a secret, or keys for private_key_jwt): a public client cannot prove that it is the party the exchanged token is for")
	}
	if len(p.Audiences) == 0 && len(p.Resources) == 0 {
		return ferr(".token_exchange", "allows no target: list the audiences (logical names such as orders-api) or resources (URIs) the client may ask tokens for")
	}
	for j, a := range p.Audiences {
		f := fmt.Sprintf(".token_exchange.audiences[%d]", j)
		switch {
		case a == "":
			return ferr(f, "is empty")
		case len(a) > 255 || !printableASCII(a):
			return ferr(f, "must be 1 to 255 printable ASCII characters")
		case slices.Index(p.Audiences, a) != j:
			return ferr(f, "%q is listed twice", a)
		}
	}
	for j, r := range p.Resources {
		f := fmt.Sprintf(".token_exchange.resources[%d]", j)
		if err := checkResource(r); err != nil {
			return ferr(f, "%v", err)
		}
		if slices.Index(p.Resources, r) != j {
			return ferr(f, "%q is listed twice", r)
		}
	}
	switch {
	case p.MaxLifetime < 0:
		return ferr(".token_exchange.max_lifetime", "is negative (%s)", p.MaxLifetime)
	case p.MaxLifetime > 0 && p.MaxLifetime < time.Second:
		return ferr(".token_exchange.max_lifetime", "is %s; it must be at least 1s (token times have a resolution of one second)", p.MaxLifetime)
	}
	return nil
}

// checkResource checks a resource indicator (RFC 8707 §2): an absolute
// URI without a fragment. It returns a description fit for an
// error_description or a configuration error.
func checkResource(r string) error {
	if r == "" {
		return fmt.Errorf("is empty")
	}
	if len(r) > 2048 || !printableASCII(r) {
		return fmt.Errorf("must be an absolute URI of at most 2048 printable ASCII characters")
	}
	u, err := url.Parse(r)
	switch {
	case err != nil || !u.IsAbs():
		return fmt.Errorf("%q is not an absolute URI (RFC 8707 section 2)", clip(r, 64))
	case u.Fragment != "" || strings.Contains(r, "#"):
		return fmt.Errorf("%q has a fragment, which RFC 8707 section 2 forbids", clip(r, 64))
	}
	return nil
}
