// Package cookie is the session store that keeps the whole session in the
// browser: the handle is the session, codec-encoded, then encrypted and
// authenticated by gorilla/securecookie. Nothing is stored server side
// except the Ended records that make logout and back-channel logout hold.
//
// # Security
//
// securecookie encrypts with AES-CTR and authenticates name|date|value
// with HMAC-SHA256, so a handle is bound to Config.Name and to its
// creation date (MaxAge refuses handles older than MaxLifetime). Keys
// rotate: the first pair of Config.Keys encodes, every pair decodes.
//
// A cookie cannot be taken back once handed out, so ending sessions works
// by remembering: EndBySID and EndBySubject record the ending in the
// EndedStore, and Delete records the session's random ID, so that a copy
// of a logged-out cookie is refused too. Those records last MaxLifetime,
// which bounds every session here: Create and Update clamp AbsoluteExpiry
// to now+MaxLifetime, so a record always outlives what it ends.
//
// # Caveats
//
// An Update returns a new handle and the old one stays valid until the
// session expires (it carries the old state): concurrent Updates of one
// session cannot be merged, the last cookie the browser stores wins. The
// gateway's single-flight refresh keeps this to one writer per session.
package cookie

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/gorilla/securecookie"

	"github.com/bffgate/bffgate/session"
	"github.com/bffgate/bffgate/session/codec"
)

// Defaults filled in by New.
const (
	DefaultMaxSize     = 16 << 10
	DefaultMaxLifetime = 12 * time.Hour
	DefaultName        = "bffgate-session"
)

// MinHashKeySize is the shortest HMAC-SHA256 key New accepts.
const MinHashKeySize = 32

// deletedPrefix namespaces the IDs of deleted sessions in the EndedStore's
// sid records, apart from the provider's sids.
const deletedPrefix = "bffgate:deleted-session:"

// KeyPair is one securecookie key pair: Hash authenticates (HMAC-SHA256, at
// least 32 bytes), Block encrypts (AES, 16, 24 or 32 bytes).
type KeyPair struct {
	Hash  []byte
	Block []byte
}

// EndedStore remembers ended sessions for the cookie store: bolt.Ended on
// the data file, or a Redis implementation shared by several instances.
type EndedStore interface {
	// Ended reports whether a session with this sid and subject, created
	// at created, has been ended. Empty sid or sub match nothing.
	Ended(ctx context.Context, sid, sub string, created time.Time) (bool, error)
	// EndSID ends sessions carrying sid; the record may go after until.
	EndSID(ctx context.Context, sid string, until time.Time) error
	// EndSubject ends the sessions of sub created at or before since; the
	// record may go after until.
	EndSubject(ctx context.Context, sub string, since, until time.Time) error
	// Ping reports whether the backend answers (readiness). It must reach
	// the backend: an implementation that remembers answers must not
	// answer Ping from memory.
	Ping(ctx context.Context) error
}

// EndedAnyStore is an EndedStore that also answers for several sids at
// once. The cookie store checks a session's sid and subject and its own
// deletion record on every Get; with this it asks once (the Redis
// EndedStore: one round trip instead of two).
type EndedAnyStore interface {
	// EndedAny reports whether any of sids, or sub's sessions created at
	// created, has been ended, by Ended's rules for each. Empty sids and
	// an empty sub match nothing.
	EndedAny(ctx context.Context, sids []string, sub string, created time.Time) (bool, error)
}

// Config configures a Store.
type Config struct {
	// Keys are the securecookie key pairs: the first encodes, all decode.
	// At least one is required.
	Keys []KeyPair
	// MaxSize is the largest handle in bytes that Create and Update
	// produce (larger: an error wrapping session.ErrTooLarge) and that Get
	// reads. The gateway splits a handle over numbered cookies of about
	// 3,800 bytes. Default 16 KiB.
	MaxSize int
	// MaxLifetime bounds every session's absolute expiry and is the
	// securecookie MaxAge. Set it to the gateway's absolute lifetime.
	// Default 12 h.
	MaxLifetime time.Duration
	// Ended records ended sessions. Required: without it neither logout
	// nor back-channel logout could end a cookie session.
	Ended EndedStore
	// Name is bound into every handle's MAC, so a value made for another
	// purpose with the same keys is refused. Default "bffgate-session".
	Name string
	// Now is the clock for expiry decisions; nil means time.Now.
	Now func() time.Time
}

// Store is a session.Store whose handles carry the sessions themselves.
// It is safe for concurrent use.
type Store struct {
	codecs   []securecookie.Codec
	maxSize  int
	lifetime time.Duration
	ended    EndedStore
	name     string
	now      func() time.Time

	// decoded remembers handles that authenticated and decoded: a browser
	// sends the same cookie on every call until it changes, and
	// authenticating, decrypting and decoding it is most of the gateway's
	// CPU per proxied request (e2e/bench's profiles). Keyed by the whole
	// handle, so only a byte-identical cookie hits; expiry and the ended
	// records are still checked on every Get.
	mu      sync.Mutex
	decoded map[string]decodedEntry
}

// decodedEntry is a decoded handle's session and the key of its deletion
// record in the EndedStore (deletedPrefix + ID), built once rather than
// on every Get.
type decodedEntry struct {
	sess    *session.Session
	deleted string
}

// decodedMax bounds the decoded-handle cache (handles are a few KB each).
const decodedMax = 1024

var _ session.Store = (*Store)(nil)

// New validates cfg and returns a Store.
func New(cfg Config) (*Store, error) {
	if len(cfg.Keys) == 0 {
		return nil, errors.New("cookie: Config.Keys is empty; give at least one key pair (hash >= 32 bytes, block 16/24/32 bytes)")
	}
	if cfg.MaxSize == 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("cookie: Config.MaxSize is %d; it must be positive", cfg.MaxSize)
	}
	if cfg.MaxLifetime == 0 {
		cfg.MaxLifetime = DefaultMaxLifetime
	}
	if cfg.MaxLifetime < time.Second {
		return nil, fmt.Errorf("cookie: Config.MaxLifetime is %v; it must be at least a second", cfg.MaxLifetime)
	}
	if cfg.Ended == nil {
		return nil, errors.New("cookie: Config.Ended is nil; the cookie store needs an EndedStore (bolt.NewEnded on the data file) for logout and back-channel logout")
	}
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{maxSize: cfg.MaxSize, lifetime: cfg.MaxLifetime, ended: cfg.Ended, name: cfg.Name, now: cfg.Now,
		decoded: make(map[string]decodedEntry)}
	for i, k := range cfg.Keys {
		if len(k.Hash) < MinHashKeySize {
			return nil, fmt.Errorf("cookie: Config.Keys[%d].Hash is %d bytes; it must be at least %d random bytes", i, len(k.Hash), MinHashKeySize)
		}
		switch len(k.Block) {
		case 16, 24, 32:
		default:
			return nil, fmt.Errorf("cookie: Config.Keys[%d].Block is %d bytes; it must be 16, 24 or 32 random bytes (AES-128/192/256)", i, len(k.Block))
		}
		sc := securecookie.New(bytes.Clone(k.Hash), bytes.Clone(k.Block))
		// The value is already a compact encoding: no gob. The size limit
		// is ours (MaxSize), checked with a clear error; MaxAge refuses
		// handles encoded longer ago than any session may live.
		sc.SetSerializer(securecookie.NopEncoder{})
		sc.MaxLength(0)
		sc.MaxAge(int((cfg.MaxLifetime + time.Second - 1) / time.Second))
		s.codecs = append(s.codecs, sc)
	}
	return s, nil
}

func notFound(why string) error { return fmt.Errorf("%w: %s", session.ErrNotFound, why) }

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("cookie: session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// seal clamps, encodes and encrypts s.
func (s *Store) seal(sess *session.Session, now time.Time) (string, error) {
	if limit := now.Add(s.lifetime); sess.AbsoluteExpiry.IsZero() || sess.AbsoluteExpiry.After(limit) {
		sess.AbsoluteExpiry = limit
	}
	if sess.Expired(now) {
		return "", notFound("the session is already expired")
	}
	raw := codec.Marshal(sess)
	defer clear(raw)
	h, err := s.codecs[0].Encode(s.name, raw)
	if err != nil {
		return "", fmt.Errorf("cookie: encode: %w", err)
	}
	if len(h) > s.maxSize {
		return "", fmt.Errorf("cookie: %w: the handle is %d bytes, more than the limit of %d; raise the cookie store's maximum size, ask the provider for smaller tokens, or use a server-side store",
			session.ErrTooLarge, len(h), s.maxSize)
	}
	return h, nil
}

// Create encodes a copy of sess under a fresh random ID (sess.ID is
// ignored: no fixation) and returns it as the handle.
func (s *Store) Create(ctx context.Context, sess *session.Session) (string, error) {
	if sess == nil {
		return "", errors.New("cookie: create: nil session")
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("cookie: create: %w", err)
	}
	c := *sess
	id, err := newID()
	if err != nil {
		return "", err
	}
	c.ID = id
	now := s.now()
	h, err := s.seal(&c, now)
	if errors.Is(err, session.ErrNotFound) {
		return "", fmt.Errorf("cookie: create: the session expired at %s, before it was stored; check the idle timeout and absolute lifetime", sess.ExpiresAt().Format(time.RFC3339))
	}
	return h, err
}

// Get decrypts the handle and returns the session if it is live and not
// ended.
func (s *Store) Get(ctx context.Context, handle string) (*session.Session, error) {
	sess, deleted, err := s.open(handle)
	if err != nil {
		return nil, err
	}
	if err := s.checkEnded(ctx, sess, deleted); err != nil {
		return nil, err
	}
	return sess, nil
}

// open authenticates, decrypts and decodes handle and checks its expiry.
// It returns the session and the key of its deletion record.
func (s *Store) open(handle string) (*session.Session, string, error) {
	if handle == "" || len(handle) > s.maxSize {
		return nil, "", notFound("the handle is empty or longer than the maximum size")
	}
	s.mu.Lock()
	cached, ok := s.decoded[handle]
	s.mu.Unlock()
	var sess *session.Session
	if ok {
		cp := *cached.sess
		cp.Claims = bytes.Clone(cached.sess.Claims)
		sess = &cp
	} else {
		var raw []byte
		if err := securecookie.DecodeMulti(s.name, handle, &raw, s.codecs...); err != nil {
			return nil, "", notFound("the handle does not authenticate with any key")
		}
		var err error
		sess, err = codec.Unmarshal(raw)
		clear(raw)
		if err != nil || sess.ID == "" {
			// Authenticated but undecodable: made by a build with another
			// encoding. Treated as no session.
			return nil, "", notFound("the handle does not decode")
		}
		cp := *sess
		cp.Claims = bytes.Clone(sess.Claims)
		cached = decodedEntry{sess: &cp, deleted: deletedPrefix + sess.ID}
		s.mu.Lock()
		if len(s.decoded) >= decodedMax {
			for k := range s.decoded { // map order is random: a random eviction
				delete(s.decoded, k)
				break
			}
		}
		s.decoded[handle] = cached
		s.mu.Unlock()
	}
	if sess.Expired(s.now()) {
		return nil, "", notFound("the session has expired")
	}
	return sess, cached.deleted, nil
}

// checkEnded asks the EndedStore about sess: its sid and subject, and
// deleted, the key of its deletion record.
func (s *Store) checkEnded(ctx context.Context, sess *session.Session, deleted string) error {
	var ended bool
	var err error
	if multi, ok := s.ended.(EndedAnyStore); ok {
		ended, err = multi.EndedAny(ctx, []string{sess.SID, deleted}, sess.Subject, sess.Created)
	} else {
		ended, err = s.ended.Ended(ctx, sess.SID, sess.Subject, sess.Created)
		if err == nil && !ended {
			ended, err = s.ended.Ended(ctx, deleted, "", sess.Created)
		}
	}
	if err != nil {
		return fmt.Errorf("cookie: check ended sessions: %w", err)
	}
	if ended {
		return notFound("the session was ended")
	}
	return nil
}

// Update applies fn to the session and returns the handle of the result.
// The old handle stays valid until the session expires.
func (s *Store) Update(ctx context.Context, handle string, fn func(*session.Session) error) (string, error) {
	sess, err := s.Get(ctx, handle)
	if err != nil {
		return "", err
	}
	id, version := sess.ID, sess.Version
	if err := fn(sess); err != nil {
		return "", err
	}
	sess.ID, sess.Version = id, version+1
	return s.seal(sess, s.now())
}

// Delete records the session's ID as ended, so that this handle and every
// copy of it are refused from now on. A handle that does not decode, or a
// session already expired, needs nothing.
func (s *Store) Delete(ctx context.Context, handle string) error {
	sess, deleted, err := s.open(handle)
	if err != nil {
		return nil
	}
	if err := s.ended.EndSID(ctx, deleted, sess.AbsoluteExpiry); err != nil {
		return fmt.Errorf("cookie: delete: %w", err)
	}
	return nil
}

// EndBySID records sid as ended for MaxLifetime. It returns 0: a cookie
// store cannot count the sessions it ends.
func (s *Store) EndBySID(ctx context.Context, sid string) (int, error) {
	if sid == "" {
		return 0, nil
	}
	if err := s.ended.EndSID(ctx, sid, s.now().Add(s.lifetime)); err != nil {
		return 0, fmt.Errorf("cookie: end sid: %w", err)
	}
	return 0, nil
}

// EndBySubject records that sub's sessions created until now are ended.
// It returns 0: a cookie store cannot count the sessions it ends.
func (s *Store) EndBySubject(ctx context.Context, sub string) (int, error) {
	if sub == "" {
		return 0, nil
	}
	now := s.now()
	if err := s.ended.EndSubject(ctx, sub, now, now.Add(s.lifetime)); err != nil {
		return 0, fmt.Errorf("cookie: end subject: %w", err)
	}
	return 0, nil
}

// Ping reports whether the EndedStore answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.ended.Ping(ctx); err != nil {
		return fmt.Errorf("cookie: ping ended-session store: %w", err)
	}
	return nil
}
