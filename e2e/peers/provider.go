package peers

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Client is the metadata of one client registered at the provider.
type Client struct {
	ID                     string   `json:"client_id"`
	Secret                 string   `json:"client_secret"`
	RedirectURIs           []string `json:"redirect_uris"`
	PostLogoutRedirectURIs []string `json:"post_logout_redirect_uris,omitempty"`
	// BackchannelLogoutURI receives the provider's logout tokens
	// (OpenID Connect Back-Channel Logout 1.0); sid is always included.
	BackchannelLogoutURI string `json:"backchannel_logout_uri,omitempty"`
	// AuthMethod is the token endpoint auth method; default
	// client_secret_basic.
	AuthMethod string `json:"token_endpoint_auth_method,omitempty"`
}

// ProviderOptions configure StartProvider. Zero durations take the defaults.
type ProviderOptions struct {
	// Clients registered at start (at least one). More can be added or
	// replaced later with SetClient, for example once the gateway's port is
	// known.
	Clients []Client
	// AccessTokenTTL defaults to 10s, so tests see expiries quickly.
	AccessTokenTTL time.Duration
	// RefreshTokenTTL defaults to 1h; IDTokenTTL to 1h; SessionTTL to 24h.
	RefreshTokenTTL time.Duration
	IDTokenTTL      time.Duration
	SessionTTL      time.Duration
	// IDTokenClaims puts the profile and email claims in the ID token too.
	// By default oidc-provider conforms to OIDC Core §5.4: with an access
	// token issued, those claims come only from userinfo.
	IDTokenClaims bool
	// AccountClaims adds claims to accounts by sub, such as
	// {"ops-lead": {"groups": ["ops"], "roles": ["approver"]}}; the
	// groups and roles scopes release those two (at userinfo, or in the
	// ID token too with IDTokenClaims).
	AccountClaims map[string]map[string]any
}

// Provider is a running panva oidc-provider. Every account exists; the
// password is not checked (devInteractions). Claims of account SUB: sub,
// name "Test User SUB", preferred_username SUB, email SUB@example.test,
// email_verified true. PKCE (S256) is required, refresh tokens rotate on
// every use, every code grant gets a refresh token, and introspection,
// revocation, RP-initiated logout and back-channel logout are on.
type Provider struct {
	// Issuer is the provider's issuer URL, http://127.0.0.1:PORT.
	Issuer string

	proc  *proc
	admin string
	http  *http.Client
}

func seconds(d, def time.Duration) int {
	if d <= 0 {
		d = def
	}
	s := int(d.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

// StartProvider starts oidc-provider on a free loopback port, waits until it
// is ready, and stops it when the test ends.
func StartProvider(t testing.TB, opts ProviderOptions) *Provider {
	t.Helper()
	if len(opts.Clients) == 0 {
		t.Fatal("peers.StartProvider: ProviderOptions.Clients must list at least one client")
	}
	cfg := map[string]any{
		"host":            "127.0.0.1",
		"port":            0,
		"clients":         opts.Clients,
		"accessTokenTTL":  seconds(opts.AccessTokenTTL, 10*time.Second),
		"refreshTokenTTL": seconds(opts.RefreshTokenTTL, time.Hour),
		"idTokenTTL":      seconds(opts.IDTokenTTL, time.Hour),
		"sessionTTL":      seconds(opts.SessionTTL, 24*time.Hour),
		"idTokenClaims":   opts.IDTokenClaims,
		"accountClaims":   opts.AccountClaims,
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, line := startProc(t, "provider.mjs", string(arg))
	var ready struct {
		Issuer string `json:"issuer"`
		Admin  string `json:"admin"`
	}
	if err := json.Unmarshal(line, &ready); err != nil || ready.Issuer == "" {
		t.Fatalf("provider.mjs ready line %s: %v", line, err)
	}
	return &Provider{
		Issuer: ready.Issuer,
		proc:   p,
		admin:  ready.Admin,
		http:   &http.Client{Timeout: 10 * time.Second},
	}
}

// Stop stops the provider now (to test a provider outage). It is also
// called when the test ends.
func (p *Provider) Stop() { p.proc.stop() }

// Logs returns what the provider printed on stderr.
func (p *Provider) Logs() string { return p.proc.stderr.String() }

// Discovery fetches /.well-known/openid-configuration.
func (p *Provider) Discovery(ctx context.Context) (map[string]any, error) {
	var m map[string]any
	err := p.getJSON(ctx, p.Issuer+"/.well-known/openid-configuration", &m)
	return m, err
}

// SetClient registers a client or replaces the one with the same ID.
func (p *Provider) SetClient(ctx context.Context, c Client) error {
	return p.sendJSON(ctx, http.MethodPut, p.admin+"/clients", c, nil)
}

// EndSessionResult reports what EndSession did.
type EndSessionResult struct {
	Sessions    int `json:"sessions"`
	Backchannel []struct {
		ClientID string `json:"client_id"`
		OK       bool   `json:"ok"`
		Error    string `json:"error"`
	} `json:"backchannel"`
}

// EndSession ends every provider session of the account sub, as the
// provider's own end_session endpoint does with logout=yes: a back-channel
// logout token goes to each client with a BackchannelLogoutURI (delivered
// before EndSession returns), the grants are revoked (their refresh tokens
// die) and the sessions are destroyed.
func (p *Provider) EndSession(ctx context.Context, sub string) (EndSessionResult, error) {
	var res EndSessionResult
	err := p.sendJSON(ctx, http.MethodPost, p.admin+"/end-session", map[string]string{"sub": sub}, &res)
	return res, err
}

// EndClientSession logs the account sub out of one client, as the
// provider's end_session endpoint does for the client that asked when the
// user does not sign out everywhere: a back-channel logout token goes to
// that client only (when it has a BackchannelLogoutURI; delivered before
// the call returns), its grants are revoked, and the provider sessions
// stay signed in for every other client.
func (p *Provider) EndClientSession(ctx context.Context, sub, clientID string) (EndSessionResult, error) {
	var res EndSessionResult
	err := p.sendJSON(ctx, http.MethodPost, p.admin+"/end-session", map[string]string{"sub": sub, "client_id": clientID}, &res)
	return res, err
}

// Stats are the provider's counters since start.
type Stats struct {
	// Grants counts successful token responses by grant_type.
	Grants map[string]int `json:"grants"`
	// GrantErrors counts failed token requests by their specific reason
	// (oidc-provider's error_detail, e.g. "refresh token already used").
	GrantErrors map[string]int `json:"grantErrors"`
	// RefreshTokenReuse counts refresh tokens presented again after
	// rotation ("refresh token already used"); each one also revoked its
	// whole grant, as RFC 9700 §4.14.2 asks.
	RefreshTokenReuse int `json:"refreshTokenReuse"`
	Backchannel       struct {
		Success int      `json:"success"`
		Error   int      `json:"error"`
		Errors  []string `json:"errors"`
	} `json:"backchannel"`
	EndSession        int `json:"endSession"`
	LiveSessions      int `json:"liveSessions"`
	LiveRefreshTokens int `json:"liveRefreshTokens"`
}

// Stats reads the provider's counters.
func (p *Provider) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	err := p.getJSON(ctx, p.admin+"/stats", &s)
	return s, err
}

// Introspection is an RFC 7662 introspection response.
type Introspection struct {
	Active    bool   `json:"active"`
	Sub       string `json:"sub"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	TokenType string `json:"token_type"`
	Exp       int64  `json:"exp"`
	// Raw holds every member of the response.
	Raw map[string]any `json:"-"`
}

// Introspect asks the provider's introspection endpoint (RFC 7662) about a
// token, authenticating as the client (client_secret_basic). Any
// confidential client may introspect any token of this provider.
func (p *Provider) Introspect(ctx context.Context, clientID, clientSecret, token string) (Introspection, error) {
	var res Introspection
	form := url.Values{"token": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.Issuer+"/token/introspection", strings.NewReader(form.Encode()))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(clientSecret))
	body, err := p.do(req, http.StatusOK)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(body, &res); err != nil {
		return res, fmt.Errorf("introspection response %s: %w", body, err)
	}
	_ = json.Unmarshal(body, &res.Raw)
	return res, nil
}

// Login completes the provider's devInteractions login and consent for the
// account user over plain HTTP, starting at authURL (an authorization
// request), and returns the URL the provider redirects to at the end (the
// client's redirect_uri with code and state, or with an error), without
// following it.
func (p *Provider) Login(ctx context.Context, authURL, user string) (string, error) {
	return p.interact(ctx, authURL, user, false)
}

// DenyConsent logs user in like Login and then cancels at the consent
// page, so the client gets error=access_denied.
func (p *Provider) DenyConsent(ctx context.Context, authURL, user string) (string, error) {
	return p.interact(ctx, authURL, user, true)
}

var (
	formAction = regexp.MustCompile(`<form[^>]*action="([^"]+)"`)
	promptName = regexp.MustCompile(`name="prompt" value="([a-z]+)"`)
	abortHref  = regexp.MustCompile(`href="([^"]*/abort)"`)
)

func (p *Provider) interact(ctx context.Context, authURL, user string, deny bool) (string, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return "", err
	}
	c := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	issuer, err := url.Parse(p.Issuer)
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return "", err
	}
	for range 20 {
		resp, err := c.Do(req)
		if err != nil {
			return "", fmt.Errorf("provider login: %s %s: %w", req.Method, req.URL.Redacted(), err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		switch {
		case resp.StatusCode >= 300 && resp.StatusCode < 400:
			loc, err := resp.Location()
			if err != nil {
				return "", fmt.Errorf("provider login: %d without Location from %s", resp.StatusCode, req.URL.Path)
			}
			if loc.Host != issuer.Host {
				return loc.String(), nil
			}
			req, err = http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
			if err != nil {
				return "", err
			}
		case resp.StatusCode == http.StatusOK:
			prompt := promptName.FindSubmatch(body)
			action := formAction.FindSubmatch(body)
			if prompt == nil || action == nil {
				return "", fmt.Errorf("provider login: page at %s has no interaction form:\n%.2000s", req.URL.Path, body)
			}
			target, err := req.URL.Parse(html.UnescapeString(string(action[1])))
			if err != nil {
				return "", err
			}
			form := url.Values{"prompt": {string(prompt[1])}}
			switch string(prompt[1]) {
			case "login":
				form.Set("login", user)
				form.Set("password", "any-password")
			case "consent":
				if deny {
					abort := abortHref.FindSubmatch(body)
					if abort == nil {
						return "", fmt.Errorf("provider login: consent page has no abort link")
					}
					u, err := req.URL.Parse(html.UnescapeString(string(abort[1])))
					if err != nil {
						return "", err
					}
					req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
					if err != nil {
						return "", err
					}
					continue
				}
			}
			req, err = http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(form.Encode()))
			if err != nil {
				return "", err
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		default:
			return "", fmt.Errorf("provider login: %s %s: status %d:\n%.2000s", req.Method, req.URL.Path, resp.StatusCode, body)
		}
	}
	return "", fmt.Errorf("provider login: more than 20 steps without reaching the client")
}

func (p *Provider) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	body, err := p.do(req, http.StatusOK)
	if err != nil {
		return err
	}
	return json.Unmarshal(body, out)
}

func (p *Provider) sendJSON(ctx context.Context, method, u string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, strings.NewReader(string(b)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	body, err := p.do(req, http.StatusOK)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

func (p *Provider) do(req *http.Request, want int) ([]byte, error) {
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("provider: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("provider: %s %s: read body: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("provider: %s %s: status %d: %s", req.Method, req.URL.Path, resp.StatusCode, body)
	}
	return body, nil
}
