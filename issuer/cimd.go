package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/singleflight"
)

// ClientMetadata configures Client ID Metadata Documents
// (draft-ietf-oauth-client-id-metadata-document, the MCP authorization
// spec's default way for a client to identify itself since 2025-11-25): a
// client_id that is an https URL names a JSON document, fetched by the
// issuer, which describes the client (client_name, redirect_uris). Its
// yaml tags are the keys of issuer.client_metadata.
//
// # Security
//
// The fetch is a server-side request to a URL the client chose: it dials
// only public unicast addresses (the check runs on the address actually
// connected to, so a DNS answer that changes between look-up and connect
// gains nothing), no proxy, no redirects, at most MaxSize bytes, within
// Timeout, never a compressed body. Such a client is always shown the
// consent page, with the host of its redirect URI.
type ClientMetadata struct {
	// Enabled accepts https URLs as client ids and announces
	// client_id_metadata_document_supported in the metadata.
	Enabled bool `yaml:"enabled"`
	// AllowedDomains lists the hosts whose documents are accepted: a host
	// name (mcp.example.com) or a wildcard for its subdomains
	// (*.example.com). Empty accepts any host, and the consent page then
	// warns that the client's identity is not verified by the operator.
	AllowedDomains []string `yaml:"allowed_domains"`
	// MaxSize bounds the document (default 5120 bytes: a client's
	// metadata is a few hundred bytes; the draft suggests 5 KB).
	MaxSize int `yaml:"max_size"`
	// Timeout bounds one fetch, connect to last byte (default 5s).
	Timeout time.Duration `yaml:"timeout"`
	// MaxCache caps the cache lifetime a document's Cache-Control or
	// Expires can ask for (default 24h); a document without them is
	// cached 5m, and none less than 1m (so a client cannot make the issuer
	// refetch on every request).
	MaxCache time.Duration `yaml:"max_cache"`
	// InsecureAllowPrivateAddresses lets documents be fetched from
	// loopback, private, link-local and other non-public addresses: for
	// tests and a lab, never where a client could reach internal services
	// through the issuer.
	InsecureAllowPrivateAddresses bool `yaml:"insecure_allow_private_addresses"`
}

// Defaults of ClientMetadata.
const (
	DefaultClientMetadataMaxSize = 5 << 10
	DefaultClientMetadataTimeout = 5 * time.Second
	DefaultClientMetadataCache   = 24 * time.Hour
	cimdMinTTL                   = time.Minute
	cimdDefaultTTL               = 5 * time.Minute
	cimdMaxEntries               = 4096
)

func (m ClientMetadata) withDefaults() (ClientMetadata, error) {
	if m.MaxSize == 0 {
		m.MaxSize = DefaultClientMetadataMaxSize
	}
	if m.Timeout == 0 {
		m.Timeout = DefaultClientMetadataTimeout
	}
	if m.MaxCache == 0 {
		m.MaxCache = DefaultClientMetadataCache
	}
	switch {
	case m.MaxSize < 256 || m.MaxSize > 1<<20:
		return m, &FieldError{Path: "client_metadata.max_size", Msg: fmt.Sprintf("is %d bytes; want 256 to 1048576 (default %d)", m.MaxSize, DefaultClientMetadataMaxSize)}
	case m.Timeout < 100*time.Millisecond || m.Timeout > time.Minute:
		return m, &FieldError{Path: "client_metadata.timeout", Msg: fmt.Sprintf("is %s; want 100ms to 1m (default %s)", m.Timeout, DefaultClientMetadataTimeout)}
	case m.MaxCache < cimdMinTTL:
		return m, &FieldError{Path: "client_metadata.max_cache", Msg: fmt.Sprintf("is %s; want at least %s", m.MaxCache, cimdMinTTL)}
	}
	m.AllowedDomains = slices.Clone(m.AllowedDomains)
	for i, d := range m.AllowedDomains {
		h := strings.TrimPrefix(d, "*.")
		if h == "" || strings.ContainsAny(h, "*/:@ ") || strings.ToLower(d) != d {
			return m, &FieldError{Path: fmt.Sprintf("client_metadata.allowed_domains[%d]", i), Msg: fmt.Sprintf("%q is not a lower-case host name or *.domain", d)}
		}
	}
	return m, nil
}

// isCIMD reports whether a client_id names a metadata document: an https
// URL (draft-ietf-oauth-client-id-metadata-document §3). A configured
// client with such an id is that configured client (lookupClient looks
// there first): its document is never fetched.
func isCIMD(id string) bool { return strings.HasPrefix(id, "https://") }

// errCIMD wraps every refusal of a client id metadata document; its text
// is safe to show (it names the URL and the rule, never a body).
var errCIMD = errors.New("client metadata document")

// checkCIMDURL checks a client_id URL per the draft's §3: https, a path,
// no fragment, no user information, no dot segments; then the trust
// policy.
func (s *Server) checkCIMDURL(id string) (*url.URL, error) {
	if len(id) > 2048 || !printableASCII(id) {
		return nil, fmt.Errorf("%w: the client_id URL must be at most 2048 printable ASCII characters", errCIMD)
	}
	u, err := url.Parse(id)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: the client_id is not a URL", errCIMD)
	case u.Scheme != "https" || u.Host == "" || u.Opaque != "":
		return nil, fmt.Errorf("%w: the client_id URL must be https with a host", errCIMD)
	case u.Path == "" || u.Path == "/":
		return nil, fmt.Errorf("%w: the client_id URL must have a path", errCIMD)
	case u.Fragment != "" || strings.Contains(id, "#"):
		return nil, fmt.Errorf("%w: the client_id URL must not have a fragment", errCIMD)
	case u.User != nil:
		return nil, fmt.Errorf("%w: the client_id URL must not have user information", errCIMD)
	case slices.ContainsFunc(strings.Split(u.EscapedPath(), "/"), func(seg string) bool { return seg == "." || seg == ".." }):
		return nil, fmt.Errorf("%w: the client_id URL must not have . or .. path segments", errCIMD)
	}
	if !s.cimdDomainAllowed(u.Hostname()) {
		return nil, fmt.Errorf("%w: clients of %s are not accepted here (issuer.client_metadata.allowed_domains)", errCIMD, u.Hostname())
	}
	return u, nil
}

// cimdDomainAllowed applies AllowedDomains (empty allows every host).
func (s *Server) cimdDomainAllowed(host string) bool {
	ds := s.cfg.ClientMetadata.AllowedDomains
	if len(ds) == 0 {
		return true
	}
	host = strings.ToLower(host)
	for _, d := range ds {
		if sfx, ok := strings.CutPrefix(d, "*."); ok {
			if strings.HasSuffix(host, "."+sfx) {
				return true
			}
		} else if host == d {
			return true
		}
	}
	return false
}

// cimdVerified reports whether the client's host is vouched for by the
// operator (listed in AllowedDomains); the consent page warns otherwise.
func (s *Server) cimdVerified(host string) bool {
	return len(s.cfg.ClientMetadata.AllowedDomains) > 0 && s.cimdDomainAllowed(host)
}

// clientDocument is the part of a client metadata document (RFC 7591 §2
// names) the issuer reads.
type clientDocument struct {
	ClientID                string   `json:"client_id"`
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ClientSecret            *string  `json:"client_secret"`
}

// cimdCache holds fetched documents as clients, per URL.
type cimdCache struct {
	sf      singleflight.Group
	mu      sync.Mutex
	entries map[string]cimdEntry
	http    *http.Client
}

type cimdEntry struct {
	cl      *client
	err     error // a refusal, remembered for cimdRefusedTTL
	expires time.Time
}

// cimdRefusedTTL is how long a refused document stays refused before it
// is fetched again: a client_id pointing at a slow or failing server
// costs the issuer one fetch per this interval, not one per request.
const cimdRefusedTTL = time.Minute

// newCIMDCache builds the fetching client: a transport of its own whose
// dialer refuses non-public addresses at connect time, without a proxy
// (a proxy would connect in our stead, unchecked), following no redirect.
// TLS settings (a test's root CAs) come from the configured HTTPClient's
// transport when it is an *http.Transport.
func newCIMDCache(cfg Config) *cimdCache {
	allowPrivate := cfg.ClientMetadata.InsecureAllowPrivateAddresses
	d := &net.Dialer{Timeout: cfg.ClientMetadata.Timeout, Control: func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &addrError{fmt.Sprintf("cannot check the address %q", address)}
		}
		if !allowPrivate && !publicAddr(ap.Addr()) {
			return &addrError{fmt.Sprintf("its host resolves to %s, which is not a public address", ap.Addr())}
		}
		return nil
	}}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   cfg.ClientMetadata.Timeout,
		ResponseHeaderTimeout: cfg.ClientMetadata.Timeout,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
		DisableCompression:    true,
	}
	if base, ok := cfg.HTTPClient.Transport.(*http.Transport); ok && base.TLSClientConfig != nil {
		tr.TLSClientConfig = base.TLSClientConfig.Clone()
	}
	return &cimdCache{
		entries: map[string]cimdEntry{},
		http: &http.Client{Transport: tr, Timeout: cfg.ClientMetadata.Timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// publicAddr reports whether ip is a global unicast address outside the
// private, shared (CGNAT), loopback, link-local, documentation and
// benchmarking ranges, and not an IPv4 address in an IPv6 wrapper that
// would reach one of those.
func publicAddr(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() || ip.IsPrivate() || ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
		return false
	}
	for _, p := range nonPublic {
		if p.Contains(ip) {
			return false
		}
	}
	return true
}

var nonPublic = func() []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15", "198.51.100.0/24",
		"203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32",
		"64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/32", "2001:db8::/32", "2002::/16", "fc00::/7", "fec0::/10",
	} {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}()

// cimdClient returns the client a metadata document URL describes,
// fetched or from the cache.
func (s *Server) cimdClient(id string) (*client, error) {
	if _, err := s.checkCIMDURL(id); err != nil {
		return nil, err
	}
	cc := s.cimd
	now := s.now()
	cc.mu.Lock()
	if e, ok := cc.entries[id]; ok && now.Before(e.expires) {
		cc.mu.Unlock()
		if e.err != nil {
			s.mcp.cimdFetches.WithLabelValues("refused").Inc()
			return nil, e.err
		}
		s.mcp.cimdFetches.WithLabelValues("cached").Inc()
		return e.cl, nil
	}
	cc.mu.Unlock()
	v, err, _ := cc.sf.Do(id, func() (any, error) {
		cl, ttl, err := s.fetchCIMD(id)
		if err != nil {
			s.mcp.cimdFetches.WithLabelValues("refused").Inc()
			s.log.Warn("client metadata document refused", "client_id", clip(id, 256), "err", err)
			cc.mu.Lock()
			defer cc.mu.Unlock()
			if len(cc.entries) >= cimdMaxEntries {
				cc.evict(now)
			}
			cc.entries[id] = cimdEntry{err: err, expires: s.now().Add(cimdRefusedTTL)}
			return nil, err
		}
		s.mcp.cimdFetches.WithLabelValues("fetched").Inc()
		cc.mu.Lock()
		defer cc.mu.Unlock()
		if len(cc.entries) >= cimdMaxEntries {
			cc.evict(now)
		}
		cc.entries[id] = cimdEntry{cl: cl, expires: s.now().Add(ttl)}
		return cl, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*client), nil
}

// evict drops expired entries, or, when none is, the one expiring first.
func (cc *cimdCache) evict(now time.Time) {
	first := ""
	for k, e := range cc.entries {
		if !now.Before(e.expires) {
			delete(cc.entries, k)
			continue
		}
		if first == "" || e.expires.Before(cc.entries[first].expires) {
			first = k
		}
	}
	if len(cc.entries) >= cimdMaxEntries && first != "" {
		delete(cc.entries, first)
	}
}

// fetchCIMD fetches and validates one document.
func (s *Server) fetchCIMD(id string) (*client, time.Duration, error) {
	mc := s.cfg.ClientMetadata
	ctx, cancel := context.WithTimeout(context.Background(), mc.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, id, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", errCIMD, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := s.cimd.http.Do(req)
	if err != nil {
		var ae *addrError
		switch {
		case errors.As(err, &ae):
			return nil, 0, fmt.Errorf("%w: %s: %v", errCIMD, id, ae)
		case ctx.Err() != nil:
			return nil, 0, fmt.Errorf("%w: %s gave no answer within %s", errCIMD, id, mc.Timeout)
		}
		return nil, 0, fmt.Errorf("%w: %s could not be fetched", errCIMD, id)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return nil, 0, fmt.Errorf("%w: %s answered with a redirect (%s); redirects are not followed", errCIMD, id, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, 0, fmt.Errorf("%w: %s answered %s", errCIMD, id, resp.Status)
	case resp.ContentLength > int64(mc.MaxSize):
		return nil, 0, fmt.Errorf("%w: %s is larger than %d bytes", errCIMD, id, mc.MaxSize)
	}
	if enc := resp.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		return nil, 0, fmt.Errorf("%w: %s answered with Content-Encoding %q; compressed documents are not read", errCIMD, id, enc)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, 0, fmt.Errorf("%w: %s is not served as application/json", errCIMD, id)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(mc.MaxSize)+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("%w: %s was not read completely within %s", errCIMD, id, mc.Timeout)
		}
		return nil, 0, fmt.Errorf("%w: reading %s failed", errCIMD, id)
	}
	if len(body) > mc.MaxSize {
		return nil, 0, fmt.Errorf("%w: %s is larger than %d bytes", errCIMD, id, mc.MaxSize)
	}
	cl, err := clientFromDocument(id, body)
	if err != nil {
		return nil, 0, err
	}
	ttl := min(max(cacheTTL(resp.Header, s.now()), cimdMinTTL), mc.MaxCache)
	return cl, ttl, nil
}

// clientFromDocument validates a document (draft §4.1, RFC 7591 §2) and
// makes the public client it describes.
func clientFromDocument(id string, body []byte) (*client, error) {
	var d clientDocument
	if err := json.Unmarshal(body, &d); err != nil {
		return nil, fmt.Errorf("%w: %s is not a JSON object of client metadata", errCIMD, id)
	}
	c, err := publicClient(id, d)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", errCIMD, id, err)
	}
	c.source = sourceCIMD
	return c, nil
}

// publicClient makes the public client described by client metadata (a
// metadata document, a dynamic registration): only what the MCP spec
// asks of such clients (the code flow with PKCE, refresh, no secret) is
// accepted, the rest refused by name.
func publicClient(id string, d clientDocument) (*client, error) {
	switch {
	case d.ClientID != id:
		return nil, fmt.Errorf("its client_id %q is not the URL it was fetched from", clip(d.ClientID, 128))
	case d.ClientSecret != nil:
		return nil, errors.New("it carries a client_secret; a client identified by a URL has none")
	case d.TokenEndpointAuthMethod != "" && d.TokenEndpointAuthMethod != authNone:
		return nil, fmt.Errorf("token_endpoint_auth_method %q is not supported; this issuer accepts such clients as public clients (none) with PKCE", clip(d.TokenEndpointAuthMethod, 64))
	case len(d.RedirectURIs) == 0:
		return nil, errors.New("it has no redirect_uris")
	case len(d.RedirectURIs) > 20:
		return nil, errors.New("it has more than 20 redirect_uris")
	case len(d.ClientName) > 200:
		return nil, errors.New("its client_name is longer than 200 bytes")
	}
	for _, u := range d.RedirectURIs {
		if err := validateRedirectURI(u, true, false); err != nil {
			return nil, fmt.Errorf("redirect_uris: %v", err)
		}
	}
	for _, rt := range d.ResponseTypes {
		if rt != "code" {
			return nil, fmt.Errorf("response_types %q is not supported (code)", clip(rt, 64))
		}
	}
	grants := d.GrantTypes
	if len(grants) == 0 {
		grants = []string{GrantAuthorizationCode}
	}
	for _, g := range grants {
		if g != GrantAuthorizationCode && g != GrantRefreshToken {
			return nil, fmt.Errorf("grant_types %q is not supported for this client (authorization_code, refresh_token)", clip(g, 64))
		}
	}
	if !slices.Contains(grants, GrantAuthorizationCode) {
		return nil, errors.New("grant_types lacks authorization_code")
	}
	// A client that stays signed in refreshes: the MCP SDK's clients list
	// refresh_token, and one that does not still gets rotating refresh
	// tokens like every public client of this issuer (refresh.go).
	if !slices.Contains(grants, GrantRefreshToken) {
		grants = append(slices.Clone(grants), GrantRefreshToken)
	}
	name := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, d.ClientName)
	return &client{
		Client: Client{ID: id, RedirectURIs: slices.Clone(d.RedirectURIs), GrantTypes: grants,
			Scopes: slices.Clone(supportedScopes), Audience: []string{id}},
		authMethod: authNone, name: name,
	}, nil
}

// addrError is the dialer's refusal of an address.
type addrError struct{ msg string }

func (e *addrError) Error() string { return e.msg }

// cimdDescription is the text of a refusal without its prefix, for an
// error page or error_description.
func cimdDescription(err error) string {
	return strings.TrimPrefix(err.Error(), errCIMD.Error()+": ")
}
