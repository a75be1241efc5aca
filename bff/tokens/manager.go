package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/bffgate/bffgate/session"
)

// Manager refreshes session tokens and keeps the client-credentials
// token. It is safe for concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	flight  singleflight.Group

	client    atomic.Pointer[clientToken]
	clientSem chan struct{}
}

// New validates cfg and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, clientSem: make(chan struct{}, 1)}
	var err error
	if m.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return m, nil
}

// refreshResult is what one refresh hands to every caller that shared it.
type refreshResult struct {
	s      *session.Session
	handle string
}

// Fresh returns a session whose access token is valid for more than
// Config.Skew, and the handle that now names it: s and handle unchanged
// when the token is fresh enough (and force is false), otherwise the
// refreshed session and, for the cookie store, its new handle, which the
// caller must set as the cookie. force refreshes regardless, as after an
// upstream's invalid_token.
//
// Concurrent calls for one session share one refresh (see the package
// doc). Errors: ErrRefreshRejected (end the session, 401
// session_expired), ErrProviderUnavailable (503, keep the session),
// session.ErrNotFound (the session ended meanwhile), or an error of the
// store (session.ErrUnavailable: 503).
func (m *Manager) Fresh(ctx context.Context, store session.Store, handle string, s *session.Session, force bool) (*session.Session, string, error) {
	if s == nil {
		return nil, "", fmt.Errorf("tokens: Fresh needs the session: %w", session.ErrNotFound)
	}
	if !force && !m.due(s, m.cfg.Now()) {
		return s, handle, nil
	}
	if s.RefreshToken == "" {
		m.metrics.refresh("no_refresh_token")
		return nil, "", fmt.Errorf("%w: the session holds no refresh token (was offline_access granted?)", ErrRefreshRejected)
	}
	key := flightKey(s)
	// The flight must not end with the first caller's request: the others
	// wait on it, and a refresh abandoned half-way (done at the provider,
	// not saved) is the one outcome rotation cannot recover from.
	fctx := context.WithoutCancel(ctx)
	ch := m.flight.DoChan(key, func() (any, error) {
		return m.refresh(fctx, store, handle, s, force)
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, "", res.Err
		}
		r := res.Val.(*refreshResult)
		out := *r.s
		out.Claims = slices.Clone(r.s.Claims)
		return &out, r.handle, nil
	case <-ctx.Done():
		return nil, "", fmt.Errorf("tokens: waiting for the session's refresh: %w", ctx.Err())
	}
}

// due reports whether s's access token should be refreshed at now. A
// token of unknown expiry is used until an upstream refuses it.
func (m *Manager) due(s *session.Session, now time.Time) bool {
	if s.AccessToken == "" {
		return true
	}
	if s.AccessExpiry.IsZero() {
		return false
	}
	return !now.Add(m.cfg.Skew).Before(s.AccessExpiry)
}

// flightKey names the session for single-flight and locking: its ID in a
// server-side store, a hash of its refresh token in the cookie store
// (whose sessions have no ID; every request of one session carries the
// same refresh token until it rotates).
func flightKey(s *session.Session) string {
	if s.ID != "" {
		return "sid:" + shortHash(s.ID)
	}
	return "rt:" + shortHash(s.RefreshToken)
}

// shortHash names a session in keys and logs without revealing its ID or
// token.
func shortHash(v string) string {
	h := sha256.Sum256([]byte("bffgate/tokens log\x00" + v))
	return hex.EncodeToString(h[:12])
}

func (m *Manager) refresh(ctx context.Context, store session.Store, handle string, s *session.Session, force bool) (*refreshResult, error) {
	oldRT := s.RefreshToken
	key := flightKey(s)
	log := m.log.With(slog.String("session", key))

	// A request holding a refresh token that was just rotated away takes
	// the tokens that replaced it.
	if rec, err := m.graceGet(ctx, oldRT); err != nil {
		log.Warn("grace record lookup failed; refreshing at the provider", slog.Any("err", err))
	} else if rec != nil {
		return m.save(ctx, log, store, handle, rec, "grace")
	}

	unlock, err := m.cfg.Locker.Lock(ctx, "bffgate:refresh:"+key, m.cfg.LockTTL)
	if err != nil {
		m.metrics.refresh("lock_unavailable")
		log.Warn("refresh lock unavailable", slog.Any("err", err))
		if !errors.Is(err, ErrLockUnavailable) {
			err = fmt.Errorf("%w: %v", ErrLockUnavailable, err)
		}
		return nil, err
	}
	defer unlock()

	// Whoever held the lock before us may have refreshed already.
	if rec, err := m.graceGet(ctx, oldRT); err == nil && rec != nil {
		return m.save(ctx, log, store, handle, rec, "grace")
	}
	if s.ID != "" {
		cur, err := store.Get(ctx, handle)
		if err != nil {
			m.metrics.refresh("store_error")
			return nil, fmt.Errorf("tokens: re-reading the session before refresh: %w", err)
		}
		if cur.RefreshToken != oldRT || (cur.AccessToken != s.AccessToken && (force || !m.due(cur, m.cfg.Now()))) {
			m.metrics.refresh("concurrent")
			log.Debug("session already refreshed by another request")
			return &refreshResult{s: cur, handle: handle}, nil
		}
	}

	start := time.Now()
	tok, err := m.exchange(ctx, oldRT)
	m.metrics.refreshDuration(time.Since(start))
	if err != nil {
		switch {
		case errors.Is(err, ErrRefreshRejected):
			m.metrics.refresh("rejected")
			log.Info("refresh token rejected by the provider; the session ends", slog.Any("err", err))
		default:
			m.metrics.refresh("unavailable")
			log.Warn("token refresh failed; the session is kept", slog.Any("err", err))
		}
		return nil, err
	}

	rec := &graceRecord{
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		TokenType:    tok.TokenType,
		AccessExpiry: tok.Expiry,
	}
	if tok.ExpiresIn > 0 {
		// x/oauth2 computes Expiry on the system clock; ours may be
		// injected (tests), and the two must agree.
		rec.AccessExpiry = m.cfg.Now().Add(time.Duration(tok.ExpiresIn) * time.Second)
	}
	if rec.RefreshToken == "" {
		rec.RefreshToken = oldRT
	}
	if id, ok := tok.Extra("id_token").(string); ok {
		rec.IDToken = id
	}
	if rec.RefreshToken != oldRT {
		// Before saving: a request that reads the old session from now on
		// must find the new tokens, never refresh with the old one.
		if err := m.gracePut(ctx, oldRT, rec); err != nil {
			log.Warn("grace record not stored; parallel requests with the old refresh token may fail", slog.Any("err", err))
		}
	}
	return m.save(ctx, log, store, handle, rec, "refreshed")
}

// save writes rec into the session in one atomic update and returns the
// session as stored.
func (m *Manager) save(ctx context.Context, log *slog.Logger, store session.Store, handle string, rec *graceRecord, result string) (*refreshResult, error) {
	var saved *session.Session
	newHandle, err := store.Update(ctx, handle, func(cur *session.Session) error {
		cur.AccessToken = rec.AccessToken
		cur.RefreshToken = rec.RefreshToken
		cur.AccessExpiry = rec.AccessExpiry
		if rec.TokenType != "" {
			cur.TokenType = rec.TokenType
		}
		if rec.IDToken != "" {
			cur.IDToken = rec.IDToken
		}
		saved = cur
		return nil
	})
	if err != nil {
		m.metrics.refresh("store_error")
		log.Warn("refreshed tokens not saved", slog.String("via", result), slog.Any("err", err))
		return nil, fmt.Errorf("tokens: saving refreshed tokens: %w", err)
	}
	m.metrics.refresh(result)
	log.Info("access token refreshed", slog.String("via", result), slog.Time("access_expiry", rec.AccessExpiry))
	out := *saved
	return &refreshResult{s: &out, handle: newHandle}, nil
}

func (m *Manager) graceGet(ctx context.Context, oldRT string) (*graceRecord, error) {
	val, ok, err := m.cfg.Grace.Get(ctx, graceKey(oldRT))
	if err != nil || !ok {
		return nil, err
	}
	return openGrace(oldRT, val)
}

func (m *Manager) gracePut(ctx context.Context, oldRT string, rec *graceRecord) error {
	val, err := sealGrace(oldRT, rec)
	if err != nil {
		return err
	}
	return m.cfg.Grace.Put(ctx, graceKey(oldRT), val, m.cfg.GraceWindow)
}

// exchange runs the refresh_token grant (RFC 6749 §6) and classifies its
// failure.
func (m *Manager) exchange(ctx context.Context, refreshToken string) (*oauth2.Token, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, m.cfg.HTTPClient)
	tok, err := m.cfg.OAuth2.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify(err)
	}
	if tok.AccessToken == "" {
		return nil, fmt.Errorf("%w: the token response has no access_token", ErrProviderUnavailable)
	}
	return tok, nil
}

// classify maps a token endpoint failure to ErrRefreshRejected
// (invalid_grant, RFC 6749 §5.2) or ErrProviderUnavailable (anything
// else, the provider's other refusals included: they say the gateway's
// client is misconfigured, not that the user's grant is gone). The
// message keeps the status and error code, never the response body.
func classify(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		if re.ErrorCode == "invalid_grant" {
			return fmt.Errorf("%w: provider answered %d invalid_grant", ErrRefreshRejected, status)
		}
		if status >= 400 && status < 500 && re.ErrorCode != "" {
			return fmt.Errorf("%w: provider refused the gateway's client: %d %s (check the client id, secret and grant types)", ErrProviderUnavailable, status, re.ErrorCode)
		}
		return fmt.Errorf("%w: provider answered %d %s", ErrProviderUnavailable, status, http.StatusText(status))
	}
	return fmt.Errorf("%w: %v", ErrProviderUnavailable, err)
}
