package issuer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/bffgate/bffgate/issuer/protocol"
)

// SPIFFE is the issuer's trust in SPIFFE trust domains: clients whose id
// is a SPIFFE ID (spiffe://trust-domain/path) authenticate with a JWT-SVID
// of a trust domain listed here (draft-ietf-oauth-spiffe-client-auth).
type SPIFFE struct {
	// TrustDomains lists the trusted trust domains and where their
	// bundles come from.
	TrustDomains []TrustDomain `yaml:"trust_domains"`
}

// TrustDomain is one trusted SPIFFE trust domain and the source of its
// bundle (SPIFFE Trust Domain and Bundle §4): a file in the SPIFFE bundle
// format, or a bundle endpoint URL (the https_web profile), re-read at
// the bundle's spiffe_refresh_hint (default 5 minutes).
type TrustDomain struct {
	// Name is the trust domain name, e.g. example.org.
	Name string `yaml:"name"`
	// BundleFile is a SPIFFE bundle (a JWK set with spiffe_refresh_hint).
	BundleFile string `yaml:"bundle_file"`
	// BundleEndpoint is a SPIFFE bundle endpoint URL: https, or http on
	// loopback.
	BundleEndpoint string `yaml:"bundle_endpoint"`
}

// defaultBundleRefresh is how often a bundle without spiffe_refresh_hint
// is read again.
const defaultBundleRefresh = 5 * time.Minute

// spiffeBundles holds the JWT authorities of the trusted trust domains.
type spiffeBundles struct {
	domains map[spiffeid.TrustDomain]keySource
}

// newSPIFFEBundles reads the bundle files (an unreadable one is a start
// error naming its key) and prepares the bundle endpoints (fetched on
// first use).
func newSPIFFEBundles(cfg SPIFFE, client *http.Client, log *slog.Logger) (*spiffeBundles, error) {
	b := &spiffeBundles{domains: map[spiffeid.TrustDomain]keySource{}}
	for i, tdc := range cfg.TrustDomains {
		field := fmt.Sprintf("spiffe.trust_domains[%d]", i)
		fail := func(key, format string, args ...any) (*spiffeBundles, error) {
			return nil, &FieldError{Path: field + key, Msg: fmt.Sprintf(format, args...)}
		}
		td, err := spiffeid.TrustDomainFromString(tdc.Name)
		if err != nil {
			return fail(".name", "%q is not a trust domain name: %v", tdc.Name, err)
		}
		if _, dup := b.domains[td]; dup {
			return fail(".name", "trust domain %q is listed twice", tdc.Name)
		}
		parse := func(body []byte) ([]jose.JSONWebKey, time.Duration, error) {
			bundle, err := spiffebundle.Parse(td, body)
			if err != nil {
				return nil, 0, err
			}
			var keys []jose.JSONWebKey
			for kid, pub := range bundle.JWTAuthorities() {
				keys = append(keys, jose.JSONWebKey{Key: pub, KeyID: kid, Use: "sig"})
			}
			refresh, _ := bundle.RefreshHint()
			return keys, refresh, nil
		}
		switch {
		case (tdc.BundleFile == "") == (tdc.BundleEndpoint == ""):
			return fail(".bundle_file", "give exactly one of bundle_file and bundle_endpoint")
		case tdc.BundleFile != "":
			f := &fileBundle{path: tdc.BundleFile, parse: parse, log: log}
			if err := f.load(time.Now()); err != nil {
				return fail(".bundle_file", "%v", err)
			}
			b.domains[td] = f
		default:
			if err := validateFetchURL(tdc.BundleEndpoint); err != nil {
				return fail(".bundle_endpoint", "%v", err)
			}
			b.domains[td] = &remoteKeySet{url: tdc.BundleEndpoint, what: fmt.Sprintf("bundle endpoint of trust domain %q", td.Name()),
				client: client, log: log.With("subsystem", "spiffe-bundle"), parse: parse}
		}
	}
	return b, nil
}

// fileBundle is a SPIFFE bundle in a file, read again at its refresh hint.
type fileBundle struct {
	path  string
	parse func([]byte) ([]jose.JSONWebKey, time.Duration, error)
	log   *slog.Logger

	mu      sync.Mutex
	keys    []jose.JSONWebKey
	expires time.Time
}

func (f *fileBundle) load(now time.Time) error {
	b, err := os.ReadFile(f.path)
	if err != nil {
		return err
	}
	if len(b) > maxKeySetBody {
		return fmt.Errorf("%s is larger than %d bytes", f.path, maxKeySetBody)
	}
	keys, refresh, err := f.parse(b)
	if err != nil {
		return fmt.Errorf("%s: %v", f.path, err)
	}
	if refresh <= 0 {
		refresh = defaultBundleRefresh
	}
	f.mu.Lock()
	f.keys, f.expires = keys, now.Add(min(max(refresh, time.Second), keySetMaxTTL))
	f.mu.Unlock()
	return nil
}

func (f *fileBundle) Keys(now time.Time, _ string) ([]jose.JSONWebKey, error) {
	f.mu.Lock()
	due := !now.Before(f.expires)
	f.mu.Unlock()
	if due {
		if err := f.load(now); err != nil {
			f.log.Warn("re-reading a SPIFFE bundle file failed; the last bundle stays in use", "file", f.path, "err", err)
			f.mu.Lock()
			f.expires = now.Add(keySetMinTTL)
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys, nil
}

// bundleSource is a jwtbundle.Source for one verification: the bundle of
// a trust domain with the keys current for kid.
type bundleSource struct {
	b   *spiffeBundles
	kid string
	now time.Time
	err error // the last failure, to name it
}

func (s *bundleSource) GetJWTBundleForTrustDomain(td spiffeid.TrustDomain) (*jwtbundle.Bundle, error) {
	src, ok := s.b.domains[td]
	if !ok {
		s.err = fmt.Errorf("the JWT-SVID is of trust domain %q, which this issuer does not trust", td.Name())
		return nil, s.err
	}
	keys, err := src.Keys(s.now, s.kid)
	if err != nil {
		s.err = err
		return nil, err
	}
	auth := make(map[string]crypto.PublicKey, len(keys))
	for _, k := range keys {
		auth[k.KeyID] = k.Key
	}
	return jwtbundle.FromJWTAuthorities(td, auth), nil
}

// verifySVIDAssertion authenticates cl, a client whose id is a SPIFFE ID,
// with a JWT-SVID as client assertion (draft-ietf-oauth-spiffe-client-auth
// §3.1): verified by go-spiffe against the bundle of its trust domain, its
// SPIFFE ID the client_id, its aud this issuer or the endpoint.
//
// Its jti, when present, is not recorded: the SPIFFE Workload API hands
// the same JWT-SVID out again until it nears expiry (SPIRE caches them), so
// one SVID legitimately authenticates several requests; its short
// lifetime (at most maxSVIDLifetime) bounds a replay instead.
func (s *Server) verifySVIDAssertion(ctx context.Context, cl *client, raw, endpoint string, now time.Time) error {
	bad := func(format string, args ...any) *protocol.Error {
		return protocol.ErrInvalidClient.WithDescription(format, args...)
	}
	if len(raw) > maxAssertionLen {
		return bad("the JWT-SVID is longer than %d bytes", maxAssertionLen)
	}
	if !canonicalSegments(raw) {
		return bad("the JWT-SVID is not a compact JWS of canonical base64url parts")
	}
	h, err := peekHeader(raw)
	if err != nil {
		return bad("the JWT-SVID %v", err)
	}
	if err := checkAlg("JWT-SVID", h.Alg, cl.assertionAlgs); err != nil {
		return bad("%v", err)
	}
	src := &bundleSource{b: s.ag.spiffe, kid: h.Kid, now: now}
	audiences := []string{s.cfg.Issuer, s.endpoint(pathToken)}
	if endpoint != "" {
		audiences = append(audiences, endpoint)
	}
	svid, err := jwtsvid.ParseAndValidate(raw, src, audiences)
	if err != nil {
		switch {
		case errors.Is(src.err, errKeySetFetch):
			return bad("the bundle of the JWT-SVID's trust domain could not be fetched; retry later").WithCause(src.err)
		case src.err != nil:
			return bad("%v", src.err)
		}
		return bad("the JWT-SVID does not verify: %s", strings.TrimPrefix(err.Error(), "jwtsvid: "))
	}
	if svid.ID.String() != cl.ID {
		return bad("the JWT-SVID's SPIFFE ID %q is not the client_id %q", clip(svid.ID.String(), 255), cl.ID)
	}
	c, err := peekClaims(raw) // verified above
	if err != nil {
		return bad("the JWT-SVID's claims are not valid JSON claims")
	}
	if _, err := s.checkAssertionTimes("JWT-SVID", c, maxSVIDLifetime, now); err != nil {
		return bad("%v", err)
	}
	return nil
}
