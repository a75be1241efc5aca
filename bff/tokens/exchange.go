package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/bffgate/bffgate/session"
)

// Token exchange (RFC 8693) at the gateway: an API route that asks for it
// gets a token made for it, exchanged from the session's access token at
// the provider's token endpoint, never the session's own token.
//
// Exchanged tokens are cached per session and target until shortly before
// they expire. One exchange runs at a time per session and target: the
// requests of one instance share it (single flight), and instances share
// the session's lock (Config.Locker, Redis across instances) and the
// result, sealed in the GraceStore under a key derived from the session's
// access token and the target, so that only holders of that token can
// read it. A refresh of the session changes its access token and with it
// the cache key: the next call exchanges the new token.

// Exchange token types (RFC 8693 §3).
const (
	tokenTypeAccess = "urn:ietf:params:oauth:token-type:access_token"
	grantExchange   = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// ExchangeTarget is what a route's exchanged token is for (RFC 8693 §2.1).
type ExchangeTarget struct {
	// Audience and Resource name the target (the audience and resource
	// parameters); at least one is set.
	Audience, Resource string
	// Scope narrows the token ("" asks for the provider's default).
	Scope string
	// Actor sends the gateway's client-credentials token as actor_token:
	// the issued token then names the gateway in act (delegation).
	// Without it the exchange is an impersonation.
	Actor bool
}

// String names the target in logs and metrics.
func (t ExchangeTarget) String() string {
	switch {
	case t.Audience != "" && t.Resource != "":
		return t.Audience + " " + t.Resource
	case t.Audience != "":
		return t.Audience
	}
	return t.Resource
}

func (t ExchangeTarget) key() string {
	actor := "0"
	if t.Actor {
		actor = "1"
	}
	return t.Audience + "\x00" + t.Resource + "\x00" + t.Scope + "\x00" + actor
}

// ExchangeRefusedError is the provider's refusal of an exchange (an
// OAuth error response, RFC 8693 §2.2.2): Code and Description are its
// error and error_description, sanitised to printable ASCII.
type ExchangeRefusedError struct {
	Status      int
	Code        string
	Description string
}

func (e *ExchangeRefusedError) Error() string {
	if e.Description == "" {
		return fmt.Sprintf("tokens: the provider refused the token exchange: %d %s", e.Status, e.Code)
	}
	return fmt.Sprintf("tokens: the provider refused the token exchange: %d %s: %s", e.Status, e.Code, e.Description)
}

// Is lets errors.Is(err, ErrExchangeRefused) match.
func (e *ExchangeRefusedError) Is(target error) bool { return target == ErrExchangeRefused }

// ErrExchangeRefused matches an *ExchangeRefusedError.
var ErrExchangeRefused = errors.New("tokens: the provider refused the token exchange")

// exchangeCacheMax bounds the in-process cache; expired entries are swept
// when it fills, and past it nothing more is cached (every call then
// exchanges, still one at a time per session and target).
const exchangeCacheMax = 100_000

// exchanged is one cached exchanged token.
type exchanged struct {
	// subject is the hash of the session access token it came from.
	subject string
	token   string
	// until is when to stop using it: its expiry less the skew.
	until time.Time
}

// exchangeCache is the in-process cache of exchanged tokens, by session
// (flightKey) and target, so that a session's entries go together when it
// refreshes or ends. Expired entries (of sessions that ended without a
// logout here) are swept as new ones come in, so the cache holds about
// the live ones.
type exchangeCache struct {
	mu   sync.Mutex
	m    map[string]map[string]exchanged
	n    int // entries in m
	puts int
	// forced holds, by session access token hash, until when a refusal
	// of that token may not force another refresh (RefreshOnRefusal).
	forced map[string]time.Time
}

// sweep drops expired entries; the caller holds mu.
func (c *exchangeCache) sweep(now time.Time) {
	for sess, targets := range c.m {
		for k, v := range targets {
			if !now.Before(v.until) {
				delete(targets, k)
				c.n--
			}
		}
		if len(targets) == 0 {
			delete(c.m, sess)
		}
	}
	for k, until := range c.forced {
		if !now.Before(until) {
			delete(c.forced, k)
		}
	}
}

func (c *exchangeCache) get(sess, target, subject string, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[sess][target]
	if !ok || e.subject != subject || !now.Before(e.until) {
		return "", false
	}
	return e.token, true
}

func (c *exchangeCache) put(sess, target string, e exchanged, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[string]exchanged{}
	}
	c.puts++
	if c.puts >= 64 && c.puts >= c.n/2 {
		c.puts = 0
		c.sweep(now)
	}
	if c.n >= exchangeCacheMax {
		c.sweep(now)
		if c.n >= exchangeCacheMax {
			return
		}
	}
	targets := c.m[sess]
	if targets == nil {
		targets = map[string]exchanged{}
		c.m[sess] = targets
	}
	if _, ok := targets[target]; !ok {
		c.n++
	}
	targets[target] = e
}

// forget drops the session's entry for target if it holds token.
func (c *exchangeCache) forget(sess, target, token string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[sess][target]; ok && e.token == token {
		delete(c.m[sess], target)
		c.n--
		if len(c.m[sess]) == 0 {
			delete(c.m, sess)
		}
	}
}

// forgetSession drops every entry of one session.
func (c *exchangeCache) forgetSession(sess string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n -= len(c.m[sess])
	delete(c.m, sess)
}

// subjectSecret is what the shared record of an exchange is keyed and
// sealed with: the session's access token and the target.
func subjectSecret(access string, t ExchangeTarget) string {
	return "bffgate/tokens exchange\x00" + t.key() + "\x00" + access
}

func hashOf(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:16])
}

// Exchanged returns an access token for target exchanged from the
// session's access token (RFC 8693), from the cache while it is fresh.
// The caller passes a session whose access token is fresh (Fresh).
// Errors: *ExchangeRefusedError (the provider refused: answer 403),
// ErrProviderUnavailable (answer 503).
func (m *Manager) Exchanged(ctx context.Context, s *session.Session, t ExchangeTarget) (string, error) {
	if s == nil || s.AccessToken == "" {
		return "", &ExchangeRefusedError{Code: "no_token", Description: "the session holds no access token to exchange"}
	}
	sess, target := flightKey(s), hashOf(t.key())
	key := sess + "|" + target
	subject := hashOf(s.AccessToken)
	if tok, ok := m.exchanges.get(sess, target, subject, m.cfg.Now()); ok {
		m.metrics.exchange(t.String(), "cached")
		return tok, nil
	}
	fctx := context.WithoutCancel(ctx)
	ch := m.flight.DoChan("exchange|"+key+"|"+subject, func() (any, error) {
		return m.exchangeShared(fctx, sess, target, subject, s.AccessToken, t)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", fmt.Errorf("%w: waiting for the token exchange: %v", ErrProviderUnavailable, ctx.Err())
	}
}

// ForgetExchanged drops the cached token of target if it is still token,
// as after an upstream refused it; the next Exchanged exchanges again.
// The shared record stays until it expires; the caller refreshes the
// session (a new access token, a new key) before exchanging again.
func (m *Manager) ForgetExchanged(s *session.Session, t ExchangeTarget, token string) {
	if s == nil {
		return
	}
	m.exchanges.forget(flightKey(s), hashOf(t.key()), token)
}

// refusalWindow is how long a session access token whose exchange was
// refused with invalid_grant is not refreshed again for that reason.
const refusalWindow = 5 * time.Minute

// RefreshOnRefusal reports whether a refusal (invalid_grant) of an
// exchange of s's access token should force a refresh of the session: a
// revoked session's refresh then fails and ends it (401), and a token
// revoked alone is replaced. It answers true once per session access
// token (within refusalWindow), so that a refusal that a refresh does not
// cure (a policy, a user the provider no longer has) costs one refresh,
// not one per request.
func (m *Manager) RefreshOnRefusal(s *session.Session) bool {
	if s == nil || s.AccessToken == "" {
		return false
	}
	subject := hashOf(s.AccessToken)
	now := m.cfg.Now()
	c := &m.exchanges
	c.mu.Lock()
	defer c.mu.Unlock()
	if until, ok := c.forced[subject]; ok && now.Before(until) {
		return false
	}
	if c.forced == nil {
		c.forced = map[string]time.Time{}
	}
	if len(c.forced) >= exchangeCacheMax {
		c.sweep(now)
		if len(c.forced) >= exchangeCacheMax {
			return false
		}
	}
	c.forced[subject] = now.Add(refusalWindow)
	return true
}

// ForgetSession drops every exchanged token cached for s (logout).
func (m *Manager) ForgetSession(s *session.Session) {
	if s == nil {
		return
	}
	m.exchanges.forgetSession(flightKey(s))
}

// exchangeShared runs one exchange for the instance: the shared record,
// else the lock, the shared record again, and the token endpoint.
func (m *Manager) exchangeShared(ctx context.Context, sess, target, subject, access string, t ExchangeTarget) (string, error) {
	secret := subjectSecret(access, t)
	log := m.log.With(slog.String("session", sess), slog.String("target", t.String()))
	if tok, ok := m.sharedExchange(ctx, log, sess, target, subject, secret); ok {
		m.metrics.exchange(t.String(), "shared")
		return tok, nil
	}
	unlock, _, err := m.lock(ctx, "bffgate:exchange:"+sess+":"+target)
	if err != nil {
		m.metrics.exchange(t.String(), "lock_unavailable")
		log.Warn("token exchange lock unavailable", slog.Any("err", err))
		return "", fmt.Errorf("%w: token exchange lock: %v", ErrProviderUnavailable, err)
	}
	defer unlock()
	if tok, ok := m.sharedExchange(ctx, log, sess, target, subject, secret); ok {
		m.metrics.exchange(t.String(), "shared")
		return tok, nil
	}
	start := time.Now()
	tok, expiresIn, err := m.exchangeAt(ctx, access, t)
	m.metrics.exchangeDuration(time.Since(start))
	if err != nil {
		if errors.Is(err, ErrExchangeRefused) {
			m.metrics.exchange(t.String(), "refused")
			log.Info("token exchange refused by the provider", slog.Any("err", err))
		} else {
			m.metrics.exchange(t.String(), "unavailable")
			log.Warn("token exchange failed", slog.Any("err", err))
		}
		return "", err
	}
	now := m.cfg.Now()
	// Stop using it a skew before it expires, but never sooner than half
	// its life: a short-lived exchanged token is still worth caching.
	skew := min(m.cfg.Skew, expiresIn/2)
	until := now.Add(expiresIn - skew)
	m.exchanges.put(sess, target, exchanged{subject: subject, token: tok, until: until}, now)
	if sealed, err := sealGrace(secret, &graceRecord{AccessToken: tok, AccessExpiry: until}); err == nil {
		if _, err := m.cfg.Grace.Put(ctx, graceKey(secret), sealed, until.Sub(now)); err != nil {
			log.Warn("exchanged token not shared with other instances", slog.Any("err", err))
		}
	}
	m.metrics.exchange(t.String(), "exchanged")
	log.Info("token exchanged", slog.Time("use_until", until))
	return tok, nil
}

// sharedExchange reads another instance's exchange of the same token for
// the same target.
func (m *Manager) sharedExchange(ctx context.Context, log *slog.Logger, sess, target, subject, secret string) (string, bool) {
	val, ok, err := m.cfg.Grace.Get(ctx, graceKey(secret))
	if err != nil {
		log.Warn("shared exchanged token lookup failed; exchanging at the provider", slog.Any("err", err))
		return "", false
	}
	if !ok {
		return "", false
	}
	rec, err := openGrace(secret, val)
	now := m.cfg.Now()
	if err != nil || !now.Before(rec.AccessExpiry) {
		return "", false
	}
	m.exchanges.put(sess, target, exchanged{subject: subject, token: rec.AccessToken, until: rec.AccessExpiry}, now)
	return rec.AccessToken, true
}

// exchangeResponse is the part of RFC 8693 §2.2.1 the gateway reads.
type exchangeResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Error           string `json:"error"`
	Description     string `json:"error_description"`
}

// defaultExchangedLifetime is assumed when a response has no expires_in.
const defaultExchangedLifetime = time.Minute

// exchangeAt posts the token exchange request (RFC 8693 §2.1) with the
// gateway's client authentication.
func (m *Manager) exchangeAt(ctx context.Context, access string, t ExchangeTarget) (string, time.Duration, error) {
	o := m.cfg.OAuth2
	form := url.Values{
		"grant_type":           {grantExchange},
		"subject_token":        {access},
		"subject_token_type":   {tokenTypeAccess},
		"requested_token_type": {tokenTypeAccess},
	}
	if t.Audience != "" {
		form.Set("audience", t.Audience)
	}
	if t.Resource != "" {
		form.Set("resource", t.Resource)
	}
	if t.Scope != "" {
		form.Set("scope", t.Scope)
	}
	if t.Actor {
		actor, err := m.ClientToken(ctx)
		if err != nil {
			return "", 0, err
		}
		form.Set("actor_token", actor)
		form.Set("actor_token_type", tokenTypeAccess)
	}
	basic := o.ClientSecret != "" && o.Endpoint.AuthStyle != oauth2.AuthStyleInParams
	if !basic {
		form.Set("client_id", o.ClientID)
		if o.ClientSecret != "" {
			form.Set("client_secret", o.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.Endpoint.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("%w: token exchange request: %v", ErrProviderUnavailable, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	}
	res, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("%w: token endpoint unreachable: %v", ErrProviderUnavailable, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 256<<10))
	if err != nil {
		return "", 0, fmt.Errorf("%w: reading the token exchange response: %v", ErrProviderUnavailable, err)
	}
	var r exchangeResponse
	jsonErr := json.Unmarshal(body, &r)
	switch {
	case res.StatusCode >= 500:
		return "", 0, fmt.Errorf("%w: token endpoint answered %d to the token exchange", ErrProviderUnavailable, res.StatusCode)
	case res.StatusCode != http.StatusOK:
		if jsonErr != nil || r.Error == "" {
			return "", 0, fmt.Errorf("%w: token endpoint answered %d without an OAuth error to the token exchange", ErrProviderUnavailable, res.StatusCode)
		}
		return "", 0, &ExchangeRefusedError{Status: res.StatusCode, Code: printable(r.Error, 64), Description: printable(r.Description, 300)}
	case jsonErr != nil || r.AccessToken == "":
		return "", 0, fmt.Errorf("%w: the token exchange response has no access_token", ErrProviderUnavailable)
	case !strings.EqualFold(r.TokenType, "Bearer"):
		return "", 0, &ExchangeRefusedError{Status: res.StatusCode, Code: "unsupported_token_type",
			Description: fmt.Sprintf("the provider issued a token of type %q; the gateway sends Bearer tokens only", printable(r.TokenType, 32))}
	}
	life := defaultExchangedLifetime
	if r.ExpiresIn > 0 {
		life = time.Duration(r.ExpiresIn) * time.Second
	}
	return r.AccessToken, life, nil
}

// printable keeps the printable ASCII of s (no quote or backslash), at
// most n bytes: a provider's words are passed on, its control bytes not.
func printable(s string, n int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < n; i++ {
		if c := s[i]; c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			b.WriteByte(c)
		}
	}
	return b.String()
}
