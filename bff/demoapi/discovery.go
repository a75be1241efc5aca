package demoapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// maxDocument bounds discovery, JWK set and introspection responses.
const maxDocument = 1 << 20

// fetchTimeout bounds one fetch, whatever the caller's context.
const fetchTimeout = 10 * time.Second

// metadata is the part of the provider's discovery document the API uses
// (OpenID Connect Discovery §3, RFC 8414 §2).
type metadata struct {
	Issuer                string   `json:"issuer"`
	JWKSURI               string   `json:"jwks_uri"`
	IntrospectionEndpoint string   `json:"introspection_endpoint"`
	IDTokenSigningAlgs    []string `json:"id_token_signing_alg_values_supported"`
	// Not registered, but published by several providers for JWT access
	// tokens; used when present.
	AccessTokenSigningAlgs  []string `json:"access_token_signing_alg_values_supported"`
	IntrospectionAuthMethod []string `json:"introspection_endpoint_auth_methods_supported"`
}

// discoverer fetches the discovery document once it succeeds, and retries
// a failed fetch no more often than every retry interval: until then the
// last error is returned at once, so a down issuer costs requests nothing.
type discoverer struct {
	url, issuer string
	client      *http.Client
	now         func() time.Time
	retry       time.Duration

	sf      singleflight.Group
	mu      sync.Mutex
	md      *metadata
	lastErr error
	lastTry time.Time
}

func newDiscoverer(cfg *Config) *discoverer {
	return &discoverer{
		url:    strings.TrimSuffix(cfg.Issuer, "/") + "/.well-known/openid-configuration",
		issuer: cfg.Issuer,
		client: cfg.HTTPClient,
		now:    cfg.Now,
		retry:  time.Second,
	}
}

// get returns the discovery document, fetching it if needed. Errors wrap
// ErrUnavailable.
func (d *discoverer) get(ctx context.Context) (*metadata, error) {
	d.mu.Lock()
	md, lastErr, lastTry := d.md, d.lastErr, d.lastTry
	d.mu.Unlock()
	if md != nil {
		return md, nil
	}
	if !lastTry.IsZero() && d.now().Sub(lastTry) < d.retry {
		return nil, lastErr
	}
	v, err, _ := d.sf.Do("", func() (any, error) {
		md, err := d.fetch(ctx)
		d.mu.Lock()
		defer d.mu.Unlock()
		d.lastTry = d.now()
		if err != nil {
			d.lastErr = err
			return nil, err
		}
		d.md = md
		return md, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*metadata), nil
}

func (d *discoverer) fetch(ctx context.Context) (*metadata, error) {
	var md metadata
	if err := getJSON(ctx, d.client, d.url, &md); err != nil {
		return nil, fmt.Errorf("%w: discovery: %v", ErrUnavailable, err)
	}
	if md.Issuer != d.issuer {
		// OpenID Connect Discovery §4.3: a mismatch means the document is
		// not this issuer's (or Config.Issuer is spelled differently from
		// the issuer's own identifier, e.g. a trailing slash).
		return nil, fmt.Errorf("%w: discovery document at %s names issuer %q, want %q", ErrUnavailable, d.url, md.Issuer, d.issuer)
	}
	return &md, nil
}

// getJSON fetches url and decodes a JSON 200 answer into v. Neither the
// caller's cancellation nor its deadline shortens a fetch other requests
// may share; fetchTimeout bounds it.
func getJSON(ctx context.Context, client *http.Client, url string, v any) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return fmt.Errorf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	if len(body) > maxDocument {
		return fmt.Errorf("GET %s: document larger than %d bytes", url, maxDocument)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %v", url, err)
	}
	return nil
}
