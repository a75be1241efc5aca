package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// RulesConfig configures Rules.
type RulesConfig struct {
	// PurgeBatch is how many expired records Purge removes per write
	// transaction, so that a large purge does not hold an engine's writer
	// for long. Default 5000.
	PurgeBatch int
}

// Rules is the Store: every rule of the issuer's state (code redemption,
// refresh rotation, revocation, the denylist and its change log, login
// sessions, the login throttle, purging), written once over an Engine.
// It keeps the indexes (grant to refresh tokens, login session to grants,
// the expiry index) in step with the records: every change goes through
// the helpers of rtx. It is safe for concurrent use.
type Rules struct {
	e   Engine
	cfg RulesConfig
	// secretMu lets one first caller of Secret at a time generate.
	secretMu sync.Mutex
}

var _ Store = (*Rules)(nil)

// NewRules returns the Store on e.
func NewRules(e Engine, cfg RulesConfig) (*Rules, error) {
	if e == nil {
		return nil, errors.New("storage: NewRules: engine is nil")
	}
	if cfg.PurgeBatch < 0 {
		return nil, fmt.Errorf("storage: PurgeBatch is %d; it must be positive (0 means 5000)", cfg.PurgeBatch)
	}
	if cfg.PurgeBatch == 0 {
		cfg.PurgeBatch = 5000
	}
	return &Rules{e: e, cfg: cfg}, nil
}

// Engine returns the engine under r.
func (r *Rules) Engine() Engine { return r.e }

// callbackError marks an error returned by a caller's callback (mint, gen,
// fn) so that it reaches the caller unchanged rather than wrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

func (r *Rules) view(ctx context.Context, op string, fn func(*rtx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: %s: %w", op, err)
	}
	return wrapOp(op, r.e.View(ctx, func(tx Tx) error { return fn(&rtx{tx}) }))
}

// update runs fn in one write transaction. An error of a caller's callback
// (marked callbackError) comes back as is; every other error is wrapped
// with op.
func (r *Rules) update(ctx context.Context, op string, fn func(*rtx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("storage: %s: %w", op, err)
	}
	return wrapOp(op, r.e.Update(ctx, func(tx Tx) error { return fn(&rtx{tx}) }))
}

func wrapOp(op string, err error) error {
	if err == nil {
		return nil
	}
	var cb callbackError
	if errors.As(err, &cb) {
		return cb.err
	}
	return fmt.Errorf("storage: %s: %w", op, err)
}

// Keys returns every stored key.
func (r *Rules) Keys(ctx context.Context) ([]Key, error) {
	var keys []Key
	err := r.view(ctx, "keys", func(t *rtx) error {
		var err error
		keys, err = t.keys()
		return err
	})
	return keys, err
}

// UpdateKeys replaces the key list with fn's result in one transaction;
// an error from fn is returned as is and changes nothing.
func (r *Rules) UpdateKeys(ctx context.Context, fn func([]Key) ([]Key, error)) error {
	return r.update(ctx, "update keys", func(t *rtx) error {
		old, err := t.keys()
		if err != nil {
			return err
		}
		next, err := fn(old)
		if err != nil {
			return callbackError{err}
		}
		seen := make(map[string]bool, len(next))
		for _, k := range next {
			if k.ID == "" {
				return errors.New("key with empty ID")
			}
			if seen[k.ID] {
				return fmt.Errorf("duplicate key ID %q", k.ID)
			}
			seen[k.ID] = true
		}
		return t.putJSON(BucketKeys, keysKey, next)
	})
}

const keysKey = "keys"

// Secret returns the secret named name, generating and storing it with gen
// on first use. gen runs inside the write transaction, so of concurrent
// first callers on one store exactly one value is stored and all get it.
// The first callers of one Rules generate one at a time: an engine with
// optimistic transactions (Redis) runs the losers' transactions again,
// and each would have called gen first. (Instances sharing a Redis may
// each call gen once; all get the value stored first.)
func (r *Rules) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("storage: secret: name is empty")
	}
	var out []byte
	err := r.view(ctx, "secret", func(t *rtx) error {
		var err error
		out, err = t.Get(BucketSecrets, name)
		return err
	})
	if err != nil || out != nil {
		return out, err
	}
	r.secretMu.Lock()
	defer r.secretMu.Unlock()
	// Read again under the lock: another caller of this instance may have
	// stored it meanwhile, and gen then need not run.
	err = r.view(ctx, "secret", func(t *rtx) error {
		var err error
		out, err = t.Get(BucketSecrets, name)
		return err
	})
	if err != nil || out != nil {
		return out, err
	}
	// gen runs once, outside the transaction: an engine may run a
	// transaction's function more than once (Redis after a conflict or a
	// failover), and the function must have no effect outside it.
	v, err := gen()
	if err != nil {
		return nil, err
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("storage: generator for secret %q returned no bytes", name)
	}
	candidate := slices.Clone(v)
	err = r.update(ctx, "secret", func(t *rtx) error {
		stored, err := t.Get(BucketSecrets, name)
		if err != nil || stored != nil {
			out = stored // another instance stored it first: theirs wins
			return err
		}
		out = candidate
		return t.Put(BucketSecrets, name, candidate)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateCode stores c; a code already stored under c.Hash is
// ErrAlreadyExists.
func (r *Rules) CreateCode(ctx context.Context, c AuthCode) error {
	if err := CheckNewCode(c); err != nil {
		return err
	}
	return r.update(ctx, "create code", func(t *rtx) error {
		v, err := t.Get(BucketCodes, c.Hash)
		if err != nil {
			return err
		}
		if v != nil {
			return ErrAlreadyExists
		}
		return t.putCode(c)
	})
}

// RedeemCode marks the code redeemed and stores what mint returns. mint
// must return a Grant: its ID becomes the code's RedeemedGrant, which a
// replay of the code reports.
//
// mint runs outside the write transaction, on the record as a read found
// it: signing tokens (three RSA signatures for an RS256 code exchange) is
// the slow part of a grant, and inside the transaction it would hold the
// engine's writer (bbolt's single writer, a whole group commit) for
// everyone. The write transaction then checks that the code is still
// unredeemed: of two racing redemptions exactly one stores its grant and
// the other gets the *CodeReusedError of the first, as if it had come
// after; what the loser's mint returned is dropped.
func (r *Rules) RedeemCode(ctx context.Context, codeHash string, now time.Time, mint func(AuthCode) (Issued, error)) (AuthCode, error) {
	var c AuthCode
	err := r.view(ctx, "redeem code", func(t *rtx) error {
		var err error
		if c, err = t.code(codeHash); err != nil {
			return err
		}
		// A replay is reported even after expiry (until purged): the
		// caller revokes the grant either way.
		if c.RedeemedGrant != "" {
			return &CodeReusedError{Code: c}
		}
		if expired(c.ExpiresAt, now) {
			return ErrExpired
		}
		return nil
	})
	if err != nil {
		return AuthCode{}, err
	}
	iss, err := mint(c)
	if err != nil {
		return AuthCode{}, err
	}
	if iss.Grant == nil {
		return AuthCode{}, errors.New("storage: redeem code: mint returned no grant: a redeemed code must name the grant it created")
	}
	var out AuthCode
	err = r.update(ctx, "redeem code", func(t *rtx) error {
		if err := t.prefetch(Ref{BucketCodes, codeHash}, Ref{BucketGrants, iss.Grant.ID}, refreshRef(iss.Refresh)); err != nil {
			return err
		}
		cur, err := t.code(codeHash)
		if err != nil {
			return err // purged meanwhile
		}
		if cur.RedeemedGrant != "" {
			return &CodeReusedError{Code: cur} // lost the race
		}
		if err := t.storeIssued(iss); err != nil {
			return err
		}
		cur.RedeemedGrant = iss.Grant.ID
		if err := t.putCode(cur); err != nil {
			return err
		}
		out = cur
		return nil
	})
	return out, err
}

// RotateRefresh checks jti against the allowlist, removes it when rotate is
// true and stores what mint returns. Besides the contract's errors it
// returns ErrExpired for a record past its ExpiresAt that Purge has not
// removed yet (nothing is changed).
//
// As in RedeemCode, mint runs outside the write transaction on the record
// a read found; the write transaction stores its result only if that very
// record is still on the allowlist. Of two rotations racing with one
// token exactly one commits, the other gets ErrNotFound (the token was
// rotated away: reuse), as if it had come after.
func (r *Rules) RotateRefresh(ctx context.Context, jti string, rotate bool, now time.Time, mint func(RefreshToken) (Issued, error)) error {
	var (
		rt  RefreshToken
		raw []byte
	)
	err := r.view(ctx, "rotate refresh token", func(t *rtx) error {
		var err error
		if raw, err = t.Get(BucketRefresh, jti); err != nil || raw == nil {
			if err == nil {
				err = ErrNotFound
			}
			return err
		}
		if err := json.Unmarshal(raw, &rt); err != nil {
			return fmt.Errorf("decode record %q: %w", jti, err)
		}
		if expired(rt.ExpiresAt, now) {
			return ErrExpired
		}
		return nil
	})
	if err != nil {
		return err
	}
	iss, err := mint(rt)
	if err != nil {
		return err
	}
	if iss.Grant != nil && iss.Grant.ID != rt.GrantID {
		return fmt.Errorf("storage: rotate refresh token: mint returned grant %q for a refresh token of grant %q", iss.Grant.ID, rt.GrantID)
	}
	return r.update(ctx, "rotate refresh token", func(t *rtx) error {
		if err := t.prefetch(Ref{BucketRefresh, jti}, Ref{BucketGrants, rt.GrantID}, refreshRef(iss.Refresh)); err != nil {
			return err
		}
		cur, err := t.Get(BucketRefresh, jti)
		if err != nil {
			return err
		}
		if !bytes.Equal(cur, raw) {
			return ErrNotFound // rotated away or revoked meanwhile
		}
		if rotate {
			if _, err := t.deleteRefresh(jti); err != nil {
				return err
			}
		}
		return t.storeIssued(iss)
	})
}

// RefreshToken returns the allowlist record of jti. The record is returned
// even past its ExpiresAt until Purge removes it; callers check expiry.
func (r *Rules) RefreshToken(ctx context.Context, jti string) (RefreshToken, error) {
	var out RefreshToken
	err := r.view(ctx, "refresh token", func(t *rtx) error {
		var err error
		out, err = t.refreshToken(jti)
		return err
	})
	return out, err
}

// RevokeGrant removes the grant, its refresh tokens and its index entries
// and denylists its id until deniedUntil.
func (r *Rules) RevokeGrant(ctx context.Context, grantID string, deniedUntil, now time.Time) error {
	if err := CheckRevoke("revoke grant", "grant id", grantID, deniedUntil, "the latest expiry of the grant's tokens plus the purge delay"); err != nil {
		return err
	}
	return r.update(ctx, "revoke grant", func(t *rtx) error {
		if err := t.prefetch(Ref{BucketGrants, grantID}, Ref{BucketDeny, DenyKey(DenyGrant, grantID)}); err != nil {
			return err
		}
		return t.revokeGrant(grantID, deniedUntil)
	})
}

// RevokeAccessToken denylists jti until deniedUntil and removes the
// refresh tokens of grantID (when not empty) from the allowlist. The grant
// record stays (other access tokens of it remain valid until they expire)
// and is purged with its expiry.
func (r *Rules) RevokeAccessToken(ctx context.Context, jti, grantID string, deniedUntil, now time.Time) error {
	if err := CheckRevoke("revoke access token", "jti", jti, deniedUntil, "the token's exp plus the purge delay"); err != nil {
		return err
	}
	return r.update(ctx, "revoke access token", func(t *rtx) error {
		if err := t.deny(DenyEntry{Kind: DenyJTI, ID: jti, Until: deniedUntil}); err != nil {
			return err
		}
		if grantID == "" {
			return nil
		}
		_, err := t.deleteGrantRefresh(grantID)
		return err
	})
}

// RevokeSID revokes every grant indexed under the login session sid and
// returns their ids, sorted.
func (r *Rules) RevokeSID(ctx context.Context, sid string, deniedUntil, now time.Time) ([]string, error) {
	if err := CheckRevoke("revoke sid", "sid", sid, deniedUntil, "the latest token expiry plus the purge delay"); err != nil {
		return nil, err
	}
	var ids []string
	err := r.update(ctx, "revoke sid", func(t *rtx) error {
		ids = nil
		members, err := t.Members(IndexSIDGrants, sid)
		if err != nil {
			return err
		}
		for _, id := range members {
			_, ok, err := t.grant(id)
			if err != nil {
				return err
			}
			if !ok {
				// An index entry whose grant expired away by
				// itself (a Redis TTL) names nothing to revoke.
				if err := t.RemoveMember(IndexSIDGrants, sid, id); err != nil {
					return err
				}
				continue
			}
			if err := t.revokeGrant(id, deniedUntil); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(ids)
	return ids, nil
}

// Denied reports whether kind/id is on the denylist. An entry counts until
// Purge removes it, past its Until (the token it names has expired by
// then, so the answer no longer matters).
func (r *Rules) Denied(ctx context.Context, kind DenyKind, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	var found bool
	err := r.view(ctx, "denied", func(t *rtx) error {
		v, err := t.Get(BucketDeny, DenyKey(kind, id))
		found = v != nil
		return err
	})
	return found, err
}

// DenylistChanges returns the change-log entries after cursor in order.
// limit <= 0 means no limit.
func (r *Rules) DenylistChanges(ctx context.Context, after Cursor, limit int) ([]DenyEntry, Cursor, error) {
	var out []DenyEntry
	next := after
	err := r.view(ctx, "denylist changes", func(t *rtx) error {
		out, next = nil, after
		entries, err := t.Log(after, limit)
		if err != nil {
			return err
		}
		for _, e := range entries {
			out = append(out, e.Entry)
			next = e.Cursor
		}
		return nil
	})
	if err != nil {
		return nil, after, err
	}
	return out, next, nil
}

// Purge removes every record whose expiry is at or before now, in
// transactions of at most RulesConfig.PurgeBatch records. It counts codes,
// refresh tokens, grants, denylist entries, login sessions and throttle
// records; index and change-log entries go with their records and are not
// counted.
func (r *Rules) Purge(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		var n int
		var more bool
		err := r.update(ctx, "purge", func(t *rtx) error {
			var err error
			n, more, err = t.purge(now, r.cfg.PurgeBatch)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if !more {
			return total, nil
		}
	}
}

// CreateLoginSession stores ls; an existing session with its ID is
// ErrAlreadyExists.
func (r *Rules) CreateLoginSession(ctx context.Context, ls LoginSession) error {
	if err := CheckNewLoginSession(ls); err != nil {
		return err
	}
	return r.update(ctx, "create login session", func(t *rtx) error {
		v, err := t.Get(BucketLogin, ls.ID)
		if err != nil {
			return err
		}
		if v != nil {
			return ErrAlreadyExists
		}
		if err := t.putJSON(BucketLogin, ls.ID, ls); err != nil {
			return err
		}
		return t.Expire(ExpireLogin, ls.ID, ls.ExpiresAt)
	})
}

// LoginSession returns the login session id, or ErrNotFound. The session
// is returned even past its ExpiresAt until Purge removes it; callers
// check expiry.
func (r *Rules) LoginSession(ctx context.Context, id string) (LoginSession, error) {
	var out LoginSession
	err := r.view(ctx, "login session", func(t *rtx) error {
		ok, err := t.getJSON(BucketLogin, id, &out)
		if err == nil && !ok {
			err = ErrNotFound
		}
		return err
	})
	return out, err
}

// DeleteLoginSession removes the login session id; an unknown id is no
// error.
func (r *Rules) DeleteLoginSession(ctx context.Context, id string) error {
	return r.update(ctx, "delete login session", func(t *rtx) error {
		_, err := t.deleteLogin(id)
		return err
	})
}

// Ping reports whether the engine can be read and written: an issuer that
// can read but not write its state (a full disk) can mint no code and
// rotate no refresh token, so it is not ready.
func (r *Rules) Ping(ctx context.Context) error {
	return r.e.Ping(ctx)
}

// expired reports whether a record with expiry exp has expired at now: a
// record is dead at and after its expiry instant (RFC 7519 §4.1.4).
func expired(exp, now time.Time) bool {
	return !exp.IsZero() && !now.Before(exp)
}

// rtx is one transaction with the rules' record helpers.
type rtx struct{ Tx }

// prefetch reads refs in one step where the engine can (Prefetcher);
// refs with an empty Key are skipped.
func (t *rtx) prefetch(refs ...Ref) error {
	p, ok := t.Tx.(Prefetcher)
	if !ok {
		return nil
	}
	refs = slices.DeleteFunc(refs, func(r Ref) bool { return r.Key == "" })
	return p.Prefetch(refs...)
}

// refreshRef names the allowlist record of r (none for nil).
func refreshRef(r *RefreshToken) Ref {
	if r == nil {
		return Ref{}
	}
	return Ref{BucketRefresh, r.JTI}
}

func (t *rtx) putJSON(b Bucket, key string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return t.Put(b, key, data)
}

// getJSON decodes the value under key into v and reports whether the key
// exists.
func (t *rtx) getJSON(b Bucket, key string, v any) (bool, error) {
	data, err := t.Get(b, key)
	if err != nil || data == nil {
		return false, err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %q: %w", key, err)
	}
	return true, nil
}

func (t *rtx) keys() ([]Key, error) {
	var keys []Key
	if _, err := t.getJSON(BucketKeys, keysKey, &keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func (t *rtx) code(hash string) (AuthCode, error) {
	var c AuthCode
	ok, err := t.getJSON(BucketCodes, hash, &c)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return c, err
}

func (t *rtx) putCode(c AuthCode) error {
	var old AuthCode
	ok, err := t.getJSON(BucketCodes, c.Hash, &old)
	if err != nil {
		return err
	}
	if ok && !old.ExpiresAt.Equal(c.ExpiresAt) {
		if err := t.Unexpire(ExpireCode, c.Hash, old.ExpiresAt); err != nil {
			return err
		}
	}
	if err := t.putJSON(BucketCodes, c.Hash, c); err != nil {
		return err
	}
	return t.Expire(ExpireCode, c.Hash, c.ExpiresAt)
}

func (t *rtx) grant(id string) (Grant, bool, error) {
	var g Grant
	ok, err := t.getJSON(BucketGrants, id, &g)
	return g, ok, err
}

// putGrant creates or updates a grant. Its ExpiresAt never moves earlier
// (it is the latest expiry of its refresh tokens, which Purge relies on to
// remove a grant only after all of them).
func (t *rtx) putGrant(g Grant) error {
	if g.ID == "" {
		return errors.New("grant ID is empty")
	}
	if g.ExpiresAt.IsZero() {
		return fmt.Errorf("grant %s: ExpiresAt is zero", g.ID)
	}
	old, ok, err := t.grant(g.ID)
	if err != nil {
		return err
	}
	if ok {
		if old.ExpiresAt.After(g.ExpiresAt) {
			g.ExpiresAt = old.ExpiresAt
		}
		if err := t.Unexpire(ExpireGrant, g.ID, old.ExpiresAt); err != nil {
			return err
		}
		if old.SID != "" && old.SID != g.SID {
			if err := t.RemoveMember(IndexSIDGrants, old.SID, g.ID); err != nil {
				return err
			}
		}
	}
	if err := t.putJSON(BucketGrants, g.ID, g); err != nil {
		return err
	}
	if g.SID != "" {
		if err := t.AddMember(IndexSIDGrants, g.SID, g.ID); err != nil {
			return err
		}
	}
	return t.Expire(ExpireGrant, g.ID, g.ExpiresAt)
}

// deleteGrant removes a grant, its refresh tokens and its index entries.
// It returns how many records it removed (0 for an unknown grant).
func (t *rtx) deleteGrant(id string) (int, error) {
	n, err := t.deleteGrantRefresh(id)
	if err != nil {
		return n, err
	}
	g, ok, err := t.grant(id)
	if err != nil || !ok {
		return n, err
	}
	if g.SID != "" {
		if err := t.RemoveMember(IndexSIDGrants, g.SID, id); err != nil {
			return n, err
		}
	}
	if err := t.Unexpire(ExpireGrant, id, g.ExpiresAt); err != nil {
		return n, err
	}
	return n + 1, t.Delete(BucketGrants, id)
}

func (t *rtx) revokeGrant(id string, until time.Time) error {
	if _, err := t.deleteGrant(id); err != nil {
		return err
	}
	return t.deny(DenyEntry{Kind: DenyGrant, ID: id, Until: until})
}

func (t *rtx) refreshToken(jti string) (RefreshToken, error) {
	var r RefreshToken
	ok, err := t.getJSON(BucketRefresh, jti, &r)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return r, err
}

// putRefresh allowlists r. Its grant must exist (stored earlier in the same
// transaction or before), so no allowlist record ever names a missing
// grant; the grant's ExpiresAt is raised to r's when r outlives it.
func (t *rtx) putRefresh(r RefreshToken) error {
	switch {
	case r.JTI == "":
		return errors.New("refresh token JTI is empty")
	case r.GrantID == "":
		return fmt.Errorf("refresh token %s: GrantID is empty", r.JTI)
	case r.ExpiresAt.IsZero():
		return fmt.Errorf("refresh token %s: ExpiresAt is zero", r.JTI)
	}
	v, err := t.Get(BucketRefresh, r.JTI)
	if err != nil {
		return err
	}
	if v != nil {
		return fmt.Errorf("refresh token %s: %w", r.JTI, ErrAlreadyExists)
	}
	g, ok, err := t.grant(r.GrantID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("refresh token %s names grant %s, which is not stored: %w", r.JTI, r.GrantID, ErrNotFound)
	}
	if r.ExpiresAt.After(g.ExpiresAt) {
		g.ExpiresAt = r.ExpiresAt
		if err := t.putGrant(g); err != nil {
			return err
		}
	}
	if err := t.putJSON(BucketRefresh, r.JTI, r); err != nil {
		return err
	}
	if err := t.AddMember(IndexGrantRefresh, r.GrantID, r.JTI); err != nil {
		return err
	}
	return t.Expire(ExpireRefresh, r.JTI, r.ExpiresAt)
}

// deleteRefresh removes one allowlist record and its index entries; an
// unknown jti is no error. It reports whether a record was removed.
func (t *rtx) deleteRefresh(jti string) (bool, error) {
	var r RefreshToken
	ok, err := t.getJSON(BucketRefresh, jti, &r)
	if err != nil || !ok {
		return false, err
	}
	if err := t.RemoveMember(IndexGrantRefresh, r.GrantID, jti); err != nil {
		return false, err
	}
	if err := t.Unexpire(ExpireRefresh, jti, r.ExpiresAt); err != nil {
		return false, err
	}
	return true, t.Delete(BucketRefresh, jti)
}

// deleteGrantRefresh removes every refresh token of a grant and reports
// how many it removed.
func (t *rtx) deleteGrantRefresh(grantID string) (int, error) {
	jtis, err := t.Members(IndexGrantRefresh, grantID)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, jti := range jtis {
		ok, err := t.deleteRefresh(jti)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		} else if err := t.RemoveMember(IndexGrantRefresh, grantID, jti); err != nil {
			// A member whose record expired away by itself.
			return n, err
		}
	}
	return n, nil
}

func (t *rtx) storeIssued(iss Issued) error {
	if iss.Grant != nil {
		if err := t.putGrant(*iss.Grant); err != nil {
			return err
		}
	}
	if iss.Refresh != nil {
		if err := t.putRefresh(*iss.Refresh); err != nil {
			return err
		}
	}
	return nil
}

// deny puts e on the denylist and appends it to the change log. An entry
// already there with a later or equal Until is left alone (and not logged
// again); an earlier one is extended.
func (t *rtx) deny(e DenyEntry) error {
	if e.Kind != DenyJTI && e.Kind != DenyGrant {
		return fmt.Errorf("unknown denylist kind %q", e.Kind)
	}
	if e.ID == "" {
		return errors.New("denylist entry with empty id")
	}
	key := DenyKey(e.Kind, e.ID)
	v, err := t.Get(BucketDeny, key)
	if err != nil {
		return err
	}
	if len(v) == 8 {
		old := FromNanos(binary.BigEndian.Uint64(v))
		if !old.Before(e.Until) {
			return nil
		}
		if err := t.Unexpire(ExpireDeny, key, old); err != nil {
			return err
		}
	}
	if err := t.Put(BucketDeny, key, binary.BigEndian.AppendUint64(nil, Nanos(e.Until))); err != nil {
		return err
	}
	if err := t.Expire(ExpireDeny, key, e.Until); err != nil {
		return err
	}
	return t.AppendLog(e)
}

// LogExpiryID is the expiry-index id of the change-log entry at c (the
// ExpireLog entries that AppendLog makes).
func LogExpiryID(c Cursor) string { return string(binary.BigEndian.AppendUint64(nil, uint64(c))) }

func (t *rtx) deleteLogin(id string) (bool, error) {
	var ls LoginSession
	ok, err := t.getJSON(BucketLogin, id, &ls)
	if err != nil || !ok {
		return false, err
	}
	if err := t.Unexpire(ExpireLogin, id, ls.ExpiresAt); err != nil {
		return false, err
	}
	return true, t.Delete(BucketLogin, id)
}

// deleteIfPresent deletes key from b and reports whether it was there.
func (t *rtx) deleteIfPresent(b Bucket, key string) (bool, error) {
	v, err := t.Get(b, key)
	if err != nil || v == nil {
		return false, err
	}
	return true, t.Delete(b, key)
}

// purge removes up to batch records whose expiry is at or before now, as
// listed by the expiry index. more reports that the batch was full.
func (t *rtx) purge(now time.Time, batch int) (removed int, more bool, err error) {
	due, err := t.Due(now, batch+1)
	if err != nil {
		return 0, false, err
	}
	if len(due) > batch {
		due, more = due[:batch], true
	}
	for _, d := range due {
		var ok bool
		n := 0
		switch d.Kind {
		case ExpireCode:
			ok, err = t.deleteIfPresent(BucketCodes, d.ID)
		case ExpireRefresh:
			ok, err = t.deleteRefresh(d.ID)
		case ExpireGrant:
			n, err = t.deleteGrant(d.ID)
		case ExpireDeny:
			ok, err = t.deleteIfPresent(BucketDeny, d.ID)
		case ExpireLog:
			if len(d.ID) != 8 {
				err = fmt.Errorf("expiry index entry of the change log with a %d-byte id", len(d.ID))
				break
			}
			err = t.DeleteLog(Cursor(binary.BigEndian.Uint64([]byte(d.ID))))
		case ExpireLogin:
			ok, err = t.deleteLogin(d.ID)
		case ExpireLoginFailures:
			// The index entry is moved whenever the record's expiry
			// changes, so an entry due now names an expired record.
			ok, err = t.deleteIfPresent(BucketLoginFailures, d.ID)
		case ExpireAssertion:
			// Like the throttle's: moved whenever re-recorded.
			ok, err = t.deleteIfPresent(BucketAssertions, d.ID)
		case ExpireRegistration:
			// Moved whenever the registration is used.
			ok, err = t.deleteIfPresent(BucketRegistrations, d.ID)
		case ExpireConsent:
			// Moved whenever a consent is added.
			ok, err = t.deleteIfPresent(BucketConsents, d.ID)
		default:
			err = fmt.Errorf("expiry index entry of unknown kind %q", byte(d.Kind))
		}
		if err != nil {
			return removed, false, err
		}
		if ok {
			n = 1
		}
		removed += n
		// The helpers above took their own entries out; this one may be
		// stale (its record was moved or removed): take it out too.
		if err := t.Unexpire(d.Kind, d.ID, d.At); err != nil {
			return removed, false, err
		}
	}
	return removed, more, nil
}

// Nanos maps t onto an unsigned, order-preserving number: Unix
// nanoseconds, clamped to [1970, 2262-04-11] (what an int64 holds). It is
// the stored form of a time in the expiry index, the denylist and its
// change log.
func Nanos(t time.Time) uint64 {
	if t.Before(time.Unix(0, 0)) {
		return 0
	}
	// Clamp at the exact limit, not at the year 2262: a time early in
	// 2262 still fits and must round-trip unchanged.
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return uint64(t.UnixNano())
}

// FromNanos is the inverse of Nanos, in UTC.
func FromNanos(n uint64) time.Time { return time.Unix(0, int64(n)).UTC() }
