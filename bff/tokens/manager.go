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

	// held keeps refreshed tokens the session store could not save.
	held held

	// exchanges caches the routes' exchanged tokens (exchange.go).
	exchanges exchangeCache
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
	if err := m.held.register(cfg.Registerer); err != nil {
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
	// A session with tokens held (a save failed) goes through refresh,
	// which serves and saves them, even when the store's copy looks fresh.
	if now := m.cfg.Now(); !force && !m.due(s, now) && (!m.held.any() || m.held.get(heldKey(s), now) == nil) {
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

// flightKey names the session for single-flight and locking: a hash of
// its ID, or of its refresh token for a session without an ID (every
// request of one session carries the same refresh token until it
// rotates).
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

// tokenPair is what a refresh started from: the session's tokens when it
// read them. save refuses to write over a session that no longer holds
// them.
type tokenPair struct {
	access, refresh string
}

// fenceTimeout bounds the fencing check; past it the lock counts as
// unverified and the refresh saves as carefully as after a lost one.
const fenceTimeout = 5 * time.Second

// errSuperseded ends save's store.Update without writing: the session
// moved on while this refresh ran.
var errSuperseded = errors.New("tokens: the session was refreshed by another request meanwhile")

func (m *Manager) refresh(ctx context.Context, store session.Store, handle string, s *session.Session, force bool) (*refreshResult, error) {
	// base is what the store holds for the session; save writes only over
	// it. hk names the tokens held for it after a save failed.
	base := tokenPair{access: s.AccessToken, refresh: s.RefreshToken}
	key := flightKey(s)
	hk := heldKey(s)
	log := m.log.With(slog.String("session", key))

	// An earlier refresh of this session could not be saved: its tokens,
	// not the store's, are the session's (the store's refresh token has
	// been rotated away). Save them now, or refresh from them when they
	// are due themselves.
	if rec := m.held.get(hk, m.cfg.Now()); rec != nil {
		s = withTokens(s, rec)
		if !force && !m.due(s, m.cfg.Now()) {
			return m.save(ctx, log, store, handle, hk, s, base, rec, "held_saved")
		}
	} else if m.held.full() {
		m.metrics.refresh("store_error")
		return nil, fmt.Errorf("tokens: %d sessions' refreshed tokens are waiting for the session store to accept them; no other session is refreshed until it does (nothing is rotated that could be lost): %w", heldMax, session.ErrUnavailable)
	}
	oldRT := s.RefreshToken

	// A request holding a refresh token that was just rotated away takes
	// the tokens that replaced it.
	if rec, err := m.graceGet(ctx, oldRT); err != nil {
		log.Warn("grace record lookup failed; refreshing at the provider", slog.Any("err", err))
	} else if rec != nil {
		return m.save(ctx, log, store, handle, hk, s, base, rec, "grace")
	}

	unlock, held, err := m.lock(ctx, "bffgate:refresh:"+key)
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
		return m.save(ctx, log, store, handle, hk, s, base, rec, "grace")
	}
	if s.ID != "" {
		cur, err := store.Get(ctx, handle)
		if err != nil {
			m.metrics.refresh("store_error")
			return nil, fmt.Errorf("tokens: re-reading the session before refresh: %w", err)
		}
		if cur.RefreshToken != base.refresh || (cur.AccessToken != base.access && (force || !m.due(cur, m.cfg.Now()))) {
			m.metrics.refresh("concurrent")
			log.Debug("session already refreshed by another request")
			// The store moved on: tokens held for its old state are stale.
			m.held.forget(hk)
			return &refreshResult{s: cur, handle: handle}, nil
		}
		base.access = cur.AccessToken
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
	m.fence(ctx, log, held)

	rec := &graceRecord{
		AccessToken:  tok.AccessToken,
		RefreshToken: tok.RefreshToken,
		TokenType:    tok.TokenType,
		AccessExpiry: AccessExpiry(tok, m.cfg.Now()),
	}
	if rec.RefreshToken == "" {
		rec.RefreshToken = oldRT
	}
	if id, ok := tok.Extra("id_token").(string); ok {
		rec.IDToken = id
	}
	if rec.RefreshToken != oldRT {
		// Before saving: a request that reads the old session from now on
		// must find the new tokens, never refresh with the old one. The
		// rotation published first wins (Put stores only where none is):
		// another instance may have refreshed with the same old token
		// while our lock was gone (a provider with a reuse interval
		// answers both), and with the cookie store the grace record is the
		// only shared record of it, so every holder of the old cookie must
		// be handed the same tokens. Ours are then dropped, not revoked:
		// with most providers revoking a refresh token ends the whole
		// grant, the winner's tokens included.
		stored, err := m.gracePut(ctx, oldRT, rec)
		switch {
		case err != nil:
			log.Warn("grace record not stored; parallel requests with the old refresh token may fail", slog.Any("err", err))
		case !stored:
			if other, err := m.graceGet(ctx, oldRT); err == nil && other != nil {
				return m.save(ctx, log, store, handle, hk, s, base, other, "concurrent")
			}
		}
	}
	return m.save(ctx, log, store, handle, hk, s, base, rec, "refreshed")
}

// lock takes the session's refresh lock, fenced when the Locker offers it.
// held is nil for a Locker that cannot tell.
func (m *Manager) lock(ctx context.Context, key string) (unlock func(), held func(context.Context) error, err error) {
	if fl, ok := m.cfg.Locker.(FencedLocker); ok {
		return fl.LockFenced(ctx, key, m.cfg.LockTTL)
	}
	unlock, err = m.cfg.Locker.Lock(ctx, key, m.cfg.LockTTL)
	return unlock, nil, err
}

// fence is the check after the token endpoint answered: it counts and
// logs a refresh lock that is no longer known to be ours. Nothing else
// depends on it: the grace store's first-write-wins Put and save's
// compare are what keep a late refresh from overwriting newer tokens;
// fence tells the operator that the lock TTL was too short.
func (m *Manager) fence(ctx context.Context, log *slog.Logger, held func(context.Context) error) {
	if held == nil {
		return
	}
	// The refresh's context does not end with the request; a backend that
	// hangs must not hold the save back longer than this.
	hctx, cancel := context.WithTimeout(ctx, fenceTimeout)
	err := held(hctx)
	cancel()
	switch {
	case err == nil:
	case errors.Is(err, ErrLockLost):
		m.metrics.refresh("lock_lost")
		log.Warn("refresh lock lost before the refreshed tokens were saved (the refresh outlasted it); saving only over the tokens it started from",
			slog.Duration("lock_ttl", m.cfg.LockTTL))
	default:
		m.metrics.refresh("lock_unverified")
		log.Warn("refresh lock could not be checked before saving; saving only over the tokens it started from", slog.Any("err", err))
	}
}

// save writes rec into the session in one atomic update and returns the
// session as stored. It writes only over the tokens the refresh started
// from (base), or over rec's own (a request holding the same grace record
// got there first). A session holding other tokens was refreshed by
// another request or instance meanwhile, whose tokens are at least as new
// as rec's, so save leaves it alone and returns it (result "concurrent"):
// a refresh that outlived its lock, or a grace record older than the
// session's last rotation, never rolls the session back. This compare in
// the store's own atomic step, not the lock, is what makes a lost lock
// harmless with a server-side store. With the cookie store the handle
// decodes to the session the caller sent, which holds base, so save
// writes as before; there the grace record arbitrates (see refresh).
//
// A save the store cannot make (its outage: session.ErrUnavailable) does
// not lose rec: the provider may have rotated the refresh token already,
// so rec is held in memory (see held) and returned as the session's, and
// the next request of the session saves it. s is the session the refresh
// read; hk names its held tokens.
func (m *Manager) save(ctx context.Context, log *slog.Logger, store session.Store, handle, hk string, s *session.Session, base tokenPair, rec *graceRecord, result string) (*refreshResult, error) {
	var saved *session.Session
	newHandle, err := store.Update(ctx, handle, func(cur *session.Session) error {
		saved = nil
		switch {
		case cur.AccessToken == rec.AccessToken && cur.RefreshToken == rec.RefreshToken:
			// Saved already, by a request holding the same grace
			// record: writing again changes nothing that matters.
		case cur.RefreshToken != base.refresh,
			cur.AccessToken != base.access && rec.RefreshToken == base.refresh:
			// Rotated by another refresh meanwhile (its refresh token
			// is the live one now), or refreshed without rotation (the
			// same refresh token and an access token at least as new
			// as rec's). When rec rotated but the other refresh did
			// not, rec is written: after this refresh used the old
			// refresh token, rec's may be the only one still valid.
			c := *cur
			saved = &c
			return errSuperseded
		}
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
	if errors.Is(err, errSuperseded) && saved != nil {
		m.metrics.refresh("concurrent")
		m.held.forget(hk)
		log.Info("session refreshed by another request meanwhile; its tokens are kept", slog.String("via", result))
		return &refreshResult{s: saved, handle: handle}, nil
	}
	if err != nil && storeFault(err) && rec.RefreshToken != base.refresh {
		// The provider rotated the refresh token the store holds: rec is
		// the only copy of the session's live one.
		m.metrics.refresh("store_error")
		if !m.held.put(hk, rec, s.AbsoluteExpiry, m.cfg.Now()) {
			log.Error("refreshed tokens not saved, and too many sessions' tokens are held already: this session will need a new login",
				slog.String("via", result), slog.Int("held", heldMax), slog.Any("err", err))
			return nil, fmt.Errorf("tokens: saving refreshed tokens: %w", err)
		}
		if result == "held_saved" {
			// Held already: one line per hold, not one per request.
			log.Debug("held tokens still not saved; served from memory", slog.Any("err", err))
		} else {
			m.metrics.refresh("held")
			log.Warn("refreshed tokens not saved; held in memory and served until the session store can write",
				slog.String("via", result), slog.Any("err", err))
		}
		return &refreshResult{s: withTokens(s, rec), handle: handle}, nil
	}
	if err != nil {
		m.metrics.refresh("store_error")
		if errors.Is(err, session.ErrNotFound) {
			m.held.forget(hk)
		}
		log.Warn("refreshed tokens not saved", slog.String("via", result), slog.Any("err", err))
		return nil, fmt.Errorf("tokens: saving refreshed tokens: %w", err)
	}
	m.held.forget(hk)
	// The tokens exchanged from the old access token go with it.
	m.exchanges.forgetSession(flightKey(s))
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

func (m *Manager) gracePut(ctx context.Context, oldRT string, rec *graceRecord) (bool, error) {
	val, err := sealGrace(oldRT, rec)
	if err != nil {
		return false, err
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
