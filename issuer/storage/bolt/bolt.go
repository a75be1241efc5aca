package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/bffgate/bffgate/internal/boltfault"
	"github.com/bffgate/bffgate/issuer/storage"
)

// DefaultOpenTimeout is how long OpenDB waits for the file lock when the
// caller passes no timeout.
const DefaultOpenTimeout = 5 * time.Second

// OpenDB opens (creating when missing) the bbolt file at path with mode
// 0600, creating its parent directory with mode 0700. timeout bounds the
// wait for the file's lock (zero means DefaultOpenTimeout; bbolt itself
// would wait forever), so a second bffgate on the same data directory fails
// with a clear error instead of hanging.
func OpenDB(path string, timeout time.Duration) (*bolt.DB, error) {
	if path == "" {
		return nil, errors.New("bolt: data file path is empty")
	}
	if timeout <= 0 {
		timeout = DefaultOpenTimeout
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt: create data directory: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("bolt: data file %s is in use by another bffgate process; stop it or choose another data directory: %w", path, err)
	}
	if err != nil {
		return nil, fmt.Errorf("bolt: open data file %s: %w", path, err)
	}
	return db, nil
}

// Config configures a Store.
type Config struct {
	// BucketPrefix starts the name of every bucket the Store owns, keeping
	// them apart from the other users of the shared file. Default "issuer.".
	BucketPrefix string
	// PurgeBatch is how many expired records Purge removes per write
	// transaction, so that a large purge does not hold bbolt's writer lock
	// for long. Default 5000.
	PurgeBatch int
}

// DefaultConfig returns the defaults New fills in.
func DefaultConfig() Config {
	return Config{BucketPrefix: "issuer.", PurgeBatch: 5000}
}

// Store is a storage.Store on a bbolt database. It is safe for concurrent
// use. It does not own the *bolt.DB: the caller closes it.
type Store struct {
	db    *bolt.DB
	cfg   Config
	names bucketNames
	probe *boltfault.Probe // Ping's write check
}

var _ storage.Store = (*Store)(nil)

type bucketNames struct {
	keys, secrets, codes, grants, refresh, grantRefresh, sidGrants, deny, denylog, login, expiry, loginFailures []byte
}

// New returns a Store on db, creating its buckets when missing.
func New(db *bolt.DB, cfg Config) (*Store, error) {
	if db == nil {
		return nil, errors.New("bolt: New: db is nil")
	}
	def := DefaultConfig()
	if cfg.BucketPrefix == "" {
		cfg.BucketPrefix = def.BucketPrefix
	}
	if cfg.PurgeBatch == 0 {
		cfg.PurgeBatch = def.PurgeBatch
	}
	if cfg.PurgeBatch < 0 {
		return nil, fmt.Errorf("bolt: Config.PurgeBatch is %d; it must be positive", cfg.PurgeBatch)
	}
	p := cfg.BucketPrefix
	s := &Store{db: db, cfg: cfg, names: bucketNames{
		keys:         []byte(p + "keys"),
		secrets:      []byte(p + "secrets"),
		codes:        []byte(p + "codes"),
		grants:       []byte(p + "grants"),
		refresh:      []byte(p + "refresh"),
		grantRefresh: []byte(p + "grant_refresh"),
		sidGrants:    []byte(p + "sid_grants"),
		deny:         []byte(p + "denylist"),
		denylog:      []byte(p + "denylog"),
		login:        []byte(p + "login_sessions"),
		expiry:       []byte(p + "expiry"),
		// Added after the first release: CreateBucketIfNotExists below
		// adds it to existing files.
		loginFailures: []byte(p + "login_failures"),
	}}
	err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range s.names.all() {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("create buckets", err)
	}
	s.probe = boltfault.NewProbe(db, cfg.BucketPrefix+"health", nil)
	return s, nil
}

func (n bucketNames) all() [][]byte {
	return [][]byte{n.keys, n.secrets, n.codes, n.grants, n.refresh, n.grantRefresh, n.sidGrants, n.deny, n.denylog, n.login, n.expiry, n.loginFailures}
}

// wrapErr adds context to an error from a transaction. Errors that are
// already the contract's (sentinels, *CodeReusedError, the caller's own
// callback errors) pass through wrapped only with the operation name;
// every fault of the data file (a full disk, an I/O error, a read-only
// filesystem, a closed database, a lock timeout: boltfault.Is) also
// matches storage.ErrUnavailable, which the issuer answers as 503
// temporarily_unavailable.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if boltfault.Is(err) {
		return fmt.Errorf("bolt: %s: %w: %w", op, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("bolt: %s: %w", op, err)
}

func (s *Store) view(ctx context.Context, op string, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	return wrapErr(op, s.db.View(func(tx *bolt.Tx) error { return fn(s.wrap(tx)) }))
}

func (s *Store) update(ctx context.Context, op string, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	return wrapErr(op, s.db.Update(func(tx *bolt.Tx) error { return fn(s.wrap(tx)) }))
}

// callbackError marks an error returned by a caller's callback (mint, gen,
// fn) so that it reaches the caller unchanged rather than wrapped.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// runCallback runs fn inside a transaction and unwraps its error on the
// way out: the contract promises the caller its own error back.
func (s *Store) updateCB(ctx context.Context, op string, fn func(*txn) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bolt: %s: %w", op, err)
	}
	err := s.db.Update(func(tx *bolt.Tx) error { return fn(s.wrap(tx)) })
	var cb callbackError
	if errors.As(err, &cb) {
		return cb.err
	}
	return wrapErr(op, err)
}

const keysKey = "keys"

// Keys returns every stored key.
func (s *Store) Keys(ctx context.Context) ([]storage.Key, error) {
	var keys []storage.Key
	err := s.view(ctx, "keys", func(t *txn) error {
		var err error
		keys, err = t.keys()
		return err
	})
	return keys, err
}

// UpdateKeys replaces the key list with fn's result in one transaction;
// an error from fn is returned as is and changes nothing.
func (s *Store) UpdateKeys(ctx context.Context, fn func([]storage.Key) ([]storage.Key, error)) error {
	return s.updateCB(ctx, "update keys", func(t *txn) error {
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
		return t.putJSON(t.b.keys, []byte(keysKey), next)
	})
}

// Secret returns the secret named name, generating and storing it with gen
// on first use. gen runs inside the write transaction, so of concurrent
// first callers exactly one generates and all get its value.
func (s *Store) Secret(ctx context.Context, name string, gen func() ([]byte, error)) ([]byte, error) {
	if name == "" {
		return nil, errors.New("bolt: secret: name is empty")
	}
	var out []byte
	err := s.view(ctx, "secret", func(t *txn) error {
		if v := t.b.secrets.Get([]byte(name)); v != nil {
			out = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil || out != nil {
		return out, err
	}
	err = s.updateCB(ctx, "secret", func(t *txn) error {
		if v := t.b.secrets.Get([]byte(name)); v != nil {
			out = append([]byte(nil), v...)
			return nil
		}
		v, err := gen()
		if err != nil {
			return callbackError{err}
		}
		if len(v) == 0 {
			return fmt.Errorf("generator for secret %q returned no bytes", name)
		}
		out = append([]byte(nil), v...)
		return t.b.secrets.Put([]byte(name), out)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CreateCode stores c; a code already stored under c.Hash is
// storage.ErrAlreadyExists.
func (s *Store) CreateCode(ctx context.Context, c storage.AuthCode) error {
	if err := storage.CheckNewCode(c); err != nil {
		return err
	}
	return s.update(ctx, "create code", func(t *txn) error {
		if t.b.codes.Get([]byte(c.Hash)) != nil {
			return storage.ErrAlreadyExists
		}
		return t.putCode(c)
	})
}

// RedeemCode marks the code redeemed and stores what mint returns, in one
// transaction. mint must return a Grant: its ID becomes the code's
// RedeemedGrant, which a replay of the code reports.
func (s *Store) RedeemCode(ctx context.Context, codeHash string, now time.Time, mint func(storage.AuthCode) (storage.Issued, error)) (storage.AuthCode, error) {
	var out storage.AuthCode
	err := s.updateCB(ctx, "redeem code", func(t *txn) error {
		c, err := t.code(codeHash)
		if err != nil {
			return err
		}
		// A replay is reported even after expiry (until purged): the
		// caller revokes the grant either way.
		if c.RedeemedGrant != "" {
			return &storage.CodeReusedError{Code: c}
		}
		if expired(c.ExpiresAt, now) {
			return storage.ErrExpired
		}
		iss, err := mint(c)
		if err != nil {
			return callbackError{err}
		}
		if iss.Grant == nil {
			return errors.New("mint returned no grant: a redeemed code must name the grant it created")
		}
		if err := t.storeIssued(iss); err != nil {
			return err
		}
		c.RedeemedGrant = iss.Grant.ID
		if err := t.putCode(c); err != nil {
			return err
		}
		out = c
		return nil
	})
	return out, err
}

// RotateRefresh checks jti against the allowlist, removes it when rotate is
// true and stores what mint returns, in one transaction. Besides the
// contract's errors it returns storage.ErrExpired for a record past its
// ExpiresAt that Purge has not removed yet (nothing is changed).
func (s *Store) RotateRefresh(ctx context.Context, jti string, rotate bool, now time.Time, mint func(storage.RefreshToken) (storage.Issued, error)) error {
	return s.updateCB(ctx, "rotate refresh token", func(t *txn) error {
		rt, err := t.refreshToken(jti)
		if err != nil {
			return err
		}
		if expired(rt.ExpiresAt, now) {
			return storage.ErrExpired
		}
		iss, err := mint(rt)
		if err != nil {
			return callbackError{err}
		}
		if iss.Grant != nil && iss.Grant.ID != rt.GrantID {
			return fmt.Errorf("mint returned grant %q for a refresh token of grant %q", iss.Grant.ID, rt.GrantID)
		}
		if rotate {
			if err := t.deleteRefresh(jti); err != nil {
				return err
			}
		}
		return t.storeIssued(iss)
	})
}

// RefreshToken returns the allowlist record of jti. The record is returned
// even past its ExpiresAt until Purge removes it; callers check expiry.
func (s *Store) RefreshToken(ctx context.Context, jti string) (storage.RefreshToken, error) {
	var out storage.RefreshToken
	err := s.view(ctx, "refresh token", func(t *txn) error {
		var err error
		out, err = t.refreshToken(jti)
		return err
	})
	return out, err
}

// RevokeGrant removes the grant, its refresh tokens and its index entries
// and denylists its id until deniedUntil.
func (s *Store) RevokeGrant(ctx context.Context, grantID string, deniedUntil, now time.Time) error {
	if err := storage.CheckRevoke("revoke grant", "grant id", grantID, deniedUntil, "the latest expiry of the grant's tokens plus the purge delay"); err != nil {
		return err
	}
	return s.update(ctx, "revoke grant", func(t *txn) error {
		return t.revokeGrant(grantID, deniedUntil)
	})
}

// RevokeAccessToken denylists jti until deniedUntil and removes the
// refresh tokens of grantID (when not empty) from the allowlist. The grant
// record stays (other access tokens of it remain valid until they expire)
// and is purged with its expiry.
func (s *Store) RevokeAccessToken(ctx context.Context, jti, grantID string, deniedUntil, now time.Time) error {
	if err := storage.CheckRevoke("revoke access token", "jti", jti, deniedUntil, "the token's exp plus the purge delay"); err != nil {
		return err
	}
	return s.update(ctx, "revoke access token", func(t *txn) error {
		if err := t.deny(storage.DenyEntry{Kind: storage.DenyJTI, ID: jti, Until: deniedUntil}); err != nil {
			return err
		}
		if grantID == "" {
			return nil
		}
		return t.deleteGrantRefresh(grantID)
	})
}

// RevokeSID revokes every grant indexed under the login session sid and
// returns their ids, sorted.
func (s *Store) RevokeSID(ctx context.Context, sid string, deniedUntil, now time.Time) ([]string, error) {
	if err := storage.CheckRevoke("revoke sid", "sid", sid, deniedUntil, "the latest token expiry plus the purge delay"); err != nil {
		return nil, err
	}
	var ids []string
	err := s.update(ctx, "revoke sid", func(t *txn) error {
		ids = t.indexMembers(t.b.sidGrants, sid)
		for _, id := range ids {
			if err := t.revokeGrant(id, deniedUntil); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	return ids, nil
}

// Denied reports whether kind/id is on the denylist. An entry counts until
// Purge removes it, past its Until (the token it names has expired by
// then, so the answer no longer matters).
func (s *Store) Denied(ctx context.Context, kind storage.DenyKind, id string) (bool, error) {
	if id == "" {
		return false, nil
	}
	var found bool
	err := s.view(ctx, "denied", func(t *txn) error {
		found = t.b.deny.Get(denyKey(kind, id)) != nil
		return nil
	})
	return found, err
}

// DenylistChanges returns the change-log entries after cursor in order. The
// cursor is the log bucket's sequence number. limit <= 0 means no limit.
func (s *Store) DenylistChanges(ctx context.Context, after storage.Cursor, limit int) ([]storage.DenyEntry, storage.Cursor, error) {
	var out []storage.DenyEntry
	next := after
	err := s.view(ctx, "denylist changes", func(t *txn) error {
		c := t.b.denylog.Cursor()
		for k, v := c.Seek(u64(uint64(after) + 1)); k != nil; k, v = c.Next() {
			if limit > 0 && len(out) >= limit {
				break
			}
			e, err := decodeLogEntry(v)
			if err != nil {
				return fmt.Errorf("denylog entry %d: %w", be64(k), err)
			}
			out = append(out, e)
			next = storage.Cursor(be64(k))
		}
		return nil
	})
	if err != nil {
		return nil, after, err
	}
	return out, next, nil
}

// Purge removes every record whose expiry is at or before now, in
// transactions of at most Config.PurgeBatch records. It counts codes,
// refresh tokens, grants, denylist entries and login sessions; index and
// change-log entries go with their records and are not counted.
func (s *Store) Purge(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		var n int
		var more bool
		err := s.update(ctx, "purge", func(t *txn) error {
			var err error
			n, more, err = t.purge(now, s.cfg.PurgeBatch)
			return err
		})
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// CreateLoginSession stores ls; an existing session with its ID is
// storage.ErrAlreadyExists.
func (s *Store) CreateLoginSession(ctx context.Context, ls storage.LoginSession) error {
	if err := storage.CheckNewLoginSession(ls); err != nil {
		return err
	}
	return s.update(ctx, "create login session", func(t *txn) error {
		if t.b.login.Get([]byte(ls.ID)) != nil {
			return storage.ErrAlreadyExists
		}
		if err := t.putJSON(t.b.login, []byte(ls.ID), ls); err != nil {
			return err
		}
		return t.b.expiry.Put(expiryKey(ls.ExpiresAt, kindLogin, ls.ID), nil)
	})
}

// LoginSession returns the login session id, or storage.ErrNotFound. The
// session is returned even past its ExpiresAt until Purge removes it;
// callers check expiry.
func (s *Store) LoginSession(ctx context.Context, id string) (storage.LoginSession, error) {
	var out storage.LoginSession
	err := s.view(ctx, "login session", func(t *txn) error {
		v := t.b.login.Get([]byte(id))
		if v == nil {
			return storage.ErrNotFound
		}
		return json.Unmarshal(v, &out)
	})
	return out, err
}

// DeleteLoginSession removes the login session id; an unknown id is no
// error.
func (s *Store) DeleteLoginSession(ctx context.Context, id string) error {
	return s.update(ctx, "delete login session", func(t *txn) error {
		_, err := t.deleteLogin(id)
		return err
	})
}

// Ping reports whether the database is open and can be written (a
// boltfault.Probe, reused for a second): an issuer that can read but not
// write its file (a full disk) can mint no code and rotate no refresh
// token, so it is not ready.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.view(ctx, "ping", func(*txn) error { return nil }); err != nil {
		return err
	}
	if err := s.probe.Check(ctx); err != nil {
		return fmt.Errorf("bolt: ping: %w: %w", storage.ErrUnavailable, err)
	}
	return nil
}

// expired reports whether a record with expiry exp has expired at now: a
// record is dead at and after its expiry instant (RFC 7519 §4.1.4).
func expired(exp, now time.Time) bool {
	return !exp.IsZero() && !now.Before(exp)
}
