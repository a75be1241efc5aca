package issuer

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Client kinds (Client.Kind). An agent (an AI agent acting for itself or
// for a user) and a workload (a service) are clients that never hold a
// static secret (draft-klrc-aiagent-auth): they prove who they are with a
// short-lived signed assertion.
const (
	KindAgent    = "agent"
	KindWorkload = "workload"
)

// isSPIFFEID reports whether id is a valid SPIFFE ID
// (spiffe://trust-domain/path).
func isSPIFFEID(id string) bool {
	if !strings.HasPrefix(id, "spiffe://") {
		return false
	}
	_, err := spiffeid.FromString(id)
	return err == nil
}

// hasKeys reports whether c registers keys for private_key_jwt.
func hasKeys(c *Client) bool { return c.JWKS != nil || c.JWKSFile != "" || c.JWKSURI != "" }

// confidential reports whether c can authenticate: a secret, keys for
// private_key_jwt, or a SPIFFE ID (a JWT-SVID).
func confidential(c *Client) bool { return c.Secret != "" || hasKeys(c) || isSPIFFEID(c.ID) }

// checkClientCredentials checks how c authenticates: one way only, and
// never with a secret for an agent or workload.
func checkClientCredentials(c *Client) error {
	switch c.Kind {
	case "", KindAgent, KindWorkload:
	default:
		return ferr(".kind", "%q is not a client kind (leave it out for an application, or agent, workload)", c.Kind)
	}
	n := 0
	for _, set := range []bool{c.JWKS != nil, c.JWKSFile != "", c.JWKSURI != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return ferr(".jwks", "jwks, jwks_file and jwks_uri are alternatives; give the client's keys one way")
	case c.Secret != "" && c.Kind != "":
		return ferr(".secret", "an %s must not have a static secret: it authenticates with private_key_jwt (jwks, jwks_file or jwks_uri) or, with a SPIFFE ID as id, with its JWT-SVID; remove the secret", c.Kind)
	case c.Secret != "" && n > 0:
		return ferr(".secret", "a client authenticates one way: remove the secret to use private_key_jwt with its keys, or remove the keys")
	case c.Kind != "" && n == 0 && !isSPIFFEID(c.ID):
		return ferr(".jwks", "an %s authenticates without a secret: give its public keys (jwks, jwks_file or jwks_uri), or make its id a SPIFFE ID to authenticate with a JWT-SVID", c.Kind)
	}
	for j, a := range c.AssertionAlgs {
		if err := checkAlg("assertion", a, AssertionAlgorithms); err != nil {
			return ferr(fmt.Sprintf(".token_endpoint_auth_signing_algs[%d]", j), "%v", err)
		}
	}
	if len(c.AssertionAlgs) > 0 && !hasKeys(c) && !isSPIFFEID(c.ID) {
		return ferr(".token_endpoint_auth_signing_algs", "is set but the client authenticates with no assertion (give jwks, jwks_file or jwks_uri)")
	}
	return nil
}

// clientAuth fills cl's authentication method and, for private_key_jwt,
// its key source.
func (cfg *Config) clientAuth(cl *client) error {
	cl.assertionAlgs = slices.Clone(cl.AssertionAlgs)
	if len(cl.assertionAlgs) == 0 {
		cl.assertionAlgs = slices.Clone(AssertionAlgorithms)
	}
	switch {
	case cl.Secret != "":
		cl.authMethod = authBasic
	case hasKeys(&cl.Client):
		cl.authMethod = authPrivateKeyJWT
		src, err := cfg.clientKeys(&cl.Client)
		if err != nil {
			return err
		}
		cl.keys = src
	case isSPIFFEID(cl.ID):
		cl.authMethod = authSPIFFEJWT
		id, _ := spiffeid.FromString(cl.ID)
		if !slices.ContainsFunc(cfg.SPIFFE.TrustDomains, func(td TrustDomain) bool { return td.Name == id.TrustDomain().Name() }) {
			return ferr(".id", "is a SPIFFE ID of trust domain %q, which issuer.spiffe.trust_domains does not list; add it with its bundle_file or bundle_endpoint (or give the client keys for private_key_jwt)", id.TrustDomain().Name())
		}
	default:
		cl.authMethod = authNone
	}
	return nil
}

// clientKeys builds the key source of a private_key_jwt client.
func (cfg *Config) clientKeys(c *Client) (keySource, error) {
	switch {
	case c.JWKS != nil:
		b, err := json.Marshal(c.JWKS)
		if err != nil {
			return nil, ferr(".jwks", "is not a JSON object: %v", err)
		}
		keys, err := parsePublicJWKS(b)
		if err != nil {
			return nil, ferr(".jwks", "%v", err)
		}
		return staticKeys(keys), nil
	case c.JWKSFile != "":
		b, err := os.ReadFile(c.JWKSFile)
		if err != nil {
			return nil, ferr(".jwks_file", "%v", err)
		}
		keys, err := parsePublicJWKS(b)
		if err != nil {
			return nil, ferr(".jwks_file", "%s: %v", c.JWKSFile, err)
		}
		return staticKeys(keys), nil
	}
	if err := validateFetchURL(c.JWKSURI); err != nil {
		return nil, ferr(".jwks_uri", "%v", err)
	}
	return &remoteKeySet{
		url: c.JWKSURI, what: fmt.Sprintf("jwks_uri of client %q", c.ID), client: cfg.HTTPClient,
		log: cfg.Logger.With("subsystem", "client-keys"),
		parse: func(b []byte) ([]jose.JSONWebKey, time.Duration, error) {
			keys, err := parsePublicJWKS(b)
			return keys, 0, err
		},
	}, nil
}

// validateFetchURL checks a URL the issuer fetches keys from: https, or
// http on a loopback host (a local key server, tests).
func validateFetchURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL: %v", s, err)
	case u.Scheme == "https" && u.Host != "":
	case u.Scheme == "http" && isLoopbackHost(u.Hostname()):
	default:
		return fmt.Errorf("%q must be an https URL (or http on a loopback host): keys fetched over plain http could be swapped on the way", s)
	}
	if u.User != nil || u.Fragment != "" {
		return fmt.Errorf("%q must have no user information or fragment", s)
	}
	return nil
}

// parsePublicJWKS decodes a JWK set of public signature keys: no private
// part, no symmetric key (a client's "public" HMAC key would be a shared
// secret in the configuration), at least one key.
func parsePublicJWKS(b []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, errors.New("is not a JWK set (a JSON object with a \"keys\" array)")
	}
	if len(raw.Keys) == 0 {
		return nil, errors.New("has no keys")
	}
	var keys []jose.JSONWebKey
	for i, r := range raw.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(r); err != nil {
			return nil, fmt.Errorf("key %d is not a JWK this issuer reads: %v", i, err)
		}
		switch {
		case !k.Valid():
			return nil, fmt.Errorf("key %d is not a valid JWK", i)
		case !k.IsPublic():
			return nil, fmt.Errorf("key %d is a private or symmetric key; give only the public part of the client's key pair", i)
		case k.Use != "" && k.Use != "sig":
			continue // an encryption key: not for assertions
		case k.Algorithm != "" && !slices.Contains(AssertionAlgorithms, k.Algorithm):
			return nil, fmt.Errorf("key %d has alg %q; assertions are verified with %s", i, clip(k.Algorithm, 16), strings.Join(AssertionAlgorithms, ", "))
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("has no signature key (every key has use other than sig)")
	}
	return keys, nil
}
