package tokens

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

type clientToken struct {
	access string
	expiry time.Time // when to stop using it (already less the skew)
}

// ClientToken returns the gateway's own access token from the
// client-credentials grant (RFC 6749 §4.4), for routes with the client
// policy. It is cached and fetched again Config.Skew before it expires;
// one fetch runs at a time and the callers waiting for it share its
// result. Errors match ErrProviderUnavailable.
func (m *Manager) ClientToken(ctx context.Context) (string, error) {
	if t := m.client.Load(); t != nil && m.cfg.Now().Before(t.expiry) {
		return t.access, nil
	}
	select {
	case m.clientSem <- struct{}{}:
	case <-ctx.Done():
		return "", fmt.Errorf("%w: waiting for the client token: %v", ErrProviderUnavailable, ctx.Err())
	}
	defer func() { <-m.clientSem }()
	if t := m.client.Load(); t != nil && m.cfg.Now().Before(t.expiry) {
		return t.access, nil
	}

	o := m.cfg.OAuth2
	cc := clientcredentials.Config{
		ClientID:       o.ClientID,
		ClientSecret:   o.ClientSecret,
		TokenURL:       o.Endpoint.TokenURL,
		Scopes:         m.cfg.ClientScopes,
		EndpointParams: m.cfg.ClientParams,
		AuthStyle:      o.Endpoint.AuthStyle,
	}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, m.cfg.HTTPClient))
	m.metrics.fetched(err == nil)
	if err != nil {
		err = classify(err)
		m.log.Warn("client credentials token fetch failed", slog.Any("err", err))
		return "", fmt.Errorf("%w: client credentials grant failed: %v", ErrProviderUnavailable, err)
	}
	now := m.cfg.Now()
	exp := now.Add(DefaultClientTokenLifetime)
	if !tok.Expiry.IsZero() {
		// x/oauth2 computed Expiry from expires_in on the system clock;
		// carry the lifetime over to the configured one.
		exp = now.Add(time.Until(tok.Expiry) - m.cfg.Skew)
	}
	m.client.Store(&clientToken{access: tok.AccessToken, expiry: exp})
	m.log.Info("client credentials token fetched", slog.Time("expiry", exp))
	return tok.AccessToken, nil
}

// ForgetClientToken drops the cached client token if it is still token,
// as after an upstream answered invalid_token to it; the next
// ClientToken fetches a new one.
func (m *Manager) ForgetClientToken(token string) {
	if t := m.client.Load(); t != nil && t.access == token {
		m.client.CompareAndSwap(t, nil)
	}
}

// Revoke asks the provider to revoke a refresh token (RFC 7009 §2.1,
// token_type_hint=refresh_token), which with most providers ends the
// whole grant. It is best effort, for logout: the error says what failed
// and the caller logs it and carries on. Without Config.RevocationURL it
// does nothing.
func (m *Manager) Revoke(ctx context.Context, refreshToken string) error {
	if m.cfg.RevocationURL == "" || refreshToken == "" {
		return nil
	}
	o := m.cfg.OAuth2
	form := url.Values{"token": {refreshToken}, "token_type_hint": {"refresh_token"}}
	// RFC 6749 §2.3.1: a confidential client authenticates with Basic
	// (form-urlencoded id and secret) unless configured for the body; a
	// public client identifies itself in the body.
	basic := o.ClientSecret != "" && o.Endpoint.AuthStyle != oauth2.AuthStyleInParams
	if !basic {
		form.Set("client_id", o.ClientID)
		if o.ClientSecret != "" {
			form.Set("client_secret", o.ClientSecret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.cfg.RevocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("tokens: revocation request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if basic {
		req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	}
	res, err := m.cfg.HTTPClient.Do(req)
	if err != nil {
		m.metrics.revoke(false)
		return fmt.Errorf("tokens: revocation endpoint unreachable: %w", err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
	if res.StatusCode != http.StatusOK {
		m.metrics.revoke(false)
		return fmt.Errorf("tokens: revocation endpoint answered %d (RFC 7009 expects 200)", res.StatusCode)
	}
	m.metrics.revoke(true)
	return nil
}
