package demoapi

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"
)

// keySet caches the issuer's JWK set (RFC 7517 §5). It refetches when the
// set is older than maxAge, or when a token names a kid the set does not
// hold (the issuer rotated its keys), but never more often than every
// minRefresh: forged kids cannot turn the API into a load generator
// against the issuer. When a refetch fails, keys already known keep
// verifying (stale-if-error).
type keySet struct {
	url        string
	client     *http.Client
	now        func() time.Time
	log        *slog.Logger
	maxAge     time.Duration
	minRefresh time.Duration

	sf        singleflight.Group
	mu        sync.Mutex
	keys      []jose.JSONWebKey
	fetchedAt time.Time // last successful fetch
	triedAt   time.Time // last attempt
	lastErr   error
}

func newKeySet(url string, cfg *Config, log *slog.Logger) *keySet {
	return &keySet{
		url:        url,
		client:     cfg.HTTPClient,
		now:        cfg.Now,
		log:        log,
		maxAge:     10 * time.Minute,
		minRefresh: 5 * time.Second,
	}
}

// verificationKeys returns the keys that may have signed a token with the
// given kid and alg. An empty kid matches every key of the alg (RFC 9068
// does not require kid). Errors wrap ErrInvalidToken (no such key) or
// ErrUnavailable (the set could never be fetched).
func (k *keySet) verificationKeys(ctx context.Context, kid, alg string) ([]jose.JSONWebKey, error) {
	k.mu.Lock()
	keys, fetchedAt, triedAt, lastErr := k.keys, k.fetchedAt, k.triedAt, k.lastErr
	k.mu.Unlock()
	now := k.now()
	if !fetchedAt.IsZero() && now.Sub(fetchedAt) < k.maxAge {
		if m := matchKeys(keys, kid, alg); len(m) > 0 {
			return m, nil
		}
	}
	if !triedAt.IsZero() && now.Sub(triedAt) < k.minRefresh {
		if m := matchKeys(keys, kid, alg); len(m) > 0 {
			return m, nil
		}
		if fetchedAt.IsZero() {
			return nil, lastErr
		}
		return nil, fmt.Errorf("%w: no key in the issuer's JWK set has kid %q and alg %s", ErrInvalidToken, kid, alg)
	}
	fresh, err := k.refresh(ctx)
	if err != nil {
		if m := matchKeys(keys, kid, alg); len(m) > 0 {
			return m, nil
		}
		return nil, err
	}
	if m := matchKeys(fresh, kid, alg); len(m) > 0 {
		return m, nil
	}
	return nil, fmt.Errorf("%w: no key in the issuer's JWK set has kid %q and alg %s", ErrInvalidToken, kid, alg)
}

// refresh fetches the set once for all concurrent callers.
func (k *keySet) refresh(ctx context.Context) ([]jose.JSONWebKey, error) {
	v, err, _ := k.sf.Do("", func() (any, error) {
		keys, err := k.fetch(ctx)
		k.mu.Lock()
		defer k.mu.Unlock()
		k.triedAt = k.now()
		if err != nil {
			k.lastErr = err
			return nil, err
		}
		k.keys, k.fetchedAt = keys, k.triedAt
		return keys, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]jose.JSONWebKey), nil
}

// ready fetches the set if it was never fetched.
func (k *keySet) ready(ctx context.Context) error {
	k.mu.Lock()
	fetched := !k.fetchedAt.IsZero()
	k.mu.Unlock()
	if fetched {
		return nil
	}
	_, err := k.refresh(ctx)
	return err
}

func (k *keySet) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := getJSON(ctx, k.client, k.url, &doc); err != nil {
		return nil, fmt.Errorf("%w: JWK set: %v", ErrUnavailable, err)
	}
	keys := make([]jose.JSONWebKey, 0, len(doc.Keys))
	for i, raw := range doc.Keys {
		// One key go-jose cannot read (a new kty) must not hide the rest.
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			k.log.Warn("skipping unreadable key in the issuer's JWK set", "index", i, "err", err)
			continue
		}
		// Only public keys verify: a symmetric ("oct") key in a published
		// set would be a secret anyone can read.
		if !jwk.IsPublic() || !jwk.Valid() {
			continue
		}
		keys = append(keys, jwk)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: JWK set at %s holds no usable public key", ErrUnavailable, k.url)
	}
	return keys, nil
}

// matchKeys returns the keys usable to verify alg with the given kid.
func matchKeys(keys []jose.JSONWebKey, kid, alg string) []jose.JSONWebKey {
	var out []jose.JSONWebKey
	for _, key := range keys {
		if kid != "" && key.KeyID != kid {
			continue
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		if key.Algorithm != "" && key.Algorithm != alg {
			continue
		}
		if !keyFitsAlg(key.Key, alg) {
			continue
		}
		out = append(out, key)
	}
	return out
}

// keyFitsAlg reports whether a public key's type belongs to alg's family
// (RFC 7518 §3.1).
func keyFitsAlg(key any, alg string) bool {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		switch alg {
		case "ES256":
			return k.Curve.Params().Name == "P-256"
		case "ES384":
			return k.Curve.Params().Name == "P-384"
		case "ES512":
			return k.Curve.Params().Name == "P-521"
		}
	case ed25519.PublicKey:
		return alg == "EdDSA"
	}
	return false
}

// asymmetricAlgs is every JWS alg a resource server may accept from a JWK
// set: a public key can never verify "none" or an HMAC (RFC 8725 §3.1-2).
var asymmetricAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512,
	jose.EdDSA,
}

// allowedAlgs picks the asymmetric algs the issuer announces; RS256 when
// it announces none (OpenID Connect Core §3.1.3.7 default).
func allowedAlgs(md *metadata) []jose.SignatureAlgorithm {
	var out []jose.SignatureAlgorithm
	for _, list := range [][]string{md.AccessTokenSigningAlgs, md.IDTokenSigningAlgs} {
		for _, a := range list {
			for _, ok := range asymmetricAlgs {
				if string(ok) == a && !containsAlg(out, ok) {
					out = append(out, ok)
				}
			}
		}
	}
	if len(out) == 0 {
		out = []jose.SignatureAlgorithm{jose.RS256}
	}
	return out
}

func containsAlg(list []jose.SignatureAlgorithm, a jose.SignatureAlgorithm) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}
