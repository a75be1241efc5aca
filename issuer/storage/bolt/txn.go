package bolt

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Kinds of record in the expiry index (the byte after the time).
const (
	kindCode    = 'c'
	kindRefresh = 'r'
	kindGrant   = 'g'
	kindDeny    = 'd'
	kindLog     = 'l'
	kindLogin   = 's'
	// kindLoginFailures entries name login-throttle records, indexed at
	// their expiry (loginRecord.Expires).
	kindLoginFailures = 'f'
)

// txn is one transaction with the Store's buckets at hand. Its helpers keep
// the indexes in step with the records; every change goes through them.
type txn struct {
	tx *bolt.Tx
	b  struct {
		keys, secrets, codes, grants, refresh, grantRefresh, sidGrants, deny, denylog, login, expiry, loginFailures *bolt.Bucket
	}
}

func (s *Store) wrap(tx *bolt.Tx) *txn {
	t := &txn{tx: tx}
	n := s.names
	t.b.keys = tx.Bucket(n.keys)
	t.b.secrets = tx.Bucket(n.secrets)
	t.b.codes = tx.Bucket(n.codes)
	t.b.grants = tx.Bucket(n.grants)
	t.b.refresh = tx.Bucket(n.refresh)
	t.b.grantRefresh = tx.Bucket(n.grantRefresh)
	t.b.sidGrants = tx.Bucket(n.sidGrants)
	t.b.deny = tx.Bucket(n.deny)
	t.b.denylog = tx.Bucket(n.denylog)
	t.b.login = tx.Bucket(n.login)
	t.b.expiry = tx.Bucket(n.expiry)
	t.b.loginFailures = tx.Bucket(n.loginFailures)
	if tx.Writable() {
		// The change log only grows at its end and the expiry index
		// mostly does (keys start with a time): pack their pages full
		// instead of bbolt's default half-full split.
		t.b.denylog.FillPercent = 0.95
		t.b.expiry.FillPercent = 0.9
	}
	return t
}

// putJSON stores v as JSON. bbolt keeps the slice until commit, so it
// must not be reused: json.Marshal returns a fresh one.
func (t *txn) putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", key, err)
	}
	return b.Put(key, data)
}

// getJSON decodes the value under key into v (json.Unmarshal copies, so
// nothing of the memory map outlives the transaction). It reports whether
// the key exists.
func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	data := b.Get(key)
	if data == nil {
		return false, nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return true, fmt.Errorf("decode record %q of %s: %w", key, b.Tx().DB().Path(), err)
	}
	return true, nil
}

func (t *txn) keys() ([]storage.Key, error) {
	var keys []storage.Key
	if _, err := getJSON(t.b.keys, []byte(keysKey), &keys); err != nil {
		return nil, err
	}
	return keys, nil
}

func (t *txn) code(hash string) (storage.AuthCode, error) {
	var c storage.AuthCode
	ok, err := getJSON(t.b.codes, []byte(hash), &c)
	if err == nil && !ok {
		err = storage.ErrNotFound
	}
	return c, err
}

func (t *txn) putCode(c storage.AuthCode) error {
	var old storage.AuthCode
	ok, err := getJSON(t.b.codes, []byte(c.Hash), &old)
	if err != nil {
		return err
	}
	if ok && !old.ExpiresAt.Equal(c.ExpiresAt) {
		if err := t.b.expiry.Delete(expiryKey(old.ExpiresAt, kindCode, c.Hash)); err != nil {
			return err
		}
	}
	if err := t.putJSON(t.b.codes, []byte(c.Hash), c); err != nil {
		return err
	}
	return t.b.expiry.Put(expiryKey(c.ExpiresAt, kindCode, c.Hash), nil)
}

func (t *txn) grant(id string) (storage.Grant, bool, error) {
	var g storage.Grant
	ok, err := getJSON(t.b.grants, []byte(id), &g)
	return g, ok, err
}

// putGrant creates or updates a grant. Its ExpiresAt never moves earlier
// (it is the latest expiry of its refresh tokens, which Purge relies on to
// remove a grant only after all of them).
func (t *txn) putGrant(g storage.Grant) error {
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
		if err := t.b.expiry.Delete(expiryKey(old.ExpiresAt, kindGrant, g.ID)); err != nil {
			return err
		}
		if old.SID != "" && old.SID != g.SID {
			if err := t.b.sidGrants.Delete(indexKey(old.SID, g.ID)); err != nil {
				return err
			}
		}
	}
	if err := t.putJSON(t.b.grants, []byte(g.ID), g); err != nil {
		return err
	}
	if g.SID != "" {
		if err := t.b.sidGrants.Put(indexKey(g.SID, g.ID), nil); err != nil {
			return err
		}
	}
	return t.b.expiry.Put(expiryKey(g.ExpiresAt, kindGrant, g.ID), nil)
}

// deleteGrant removes a grant, its refresh tokens and its index entries.
// It returns how many records it removed (0 for an unknown grant).
func (t *txn) deleteGrant(id string) (int, error) {
	n, err := t.deleteGrantRefreshCount(id)
	if err != nil {
		return n, err
	}
	g, ok, err := t.grant(id)
	if err != nil || !ok {
		return n, err
	}
	if g.SID != "" {
		if err := t.b.sidGrants.Delete(indexKey(g.SID, id)); err != nil {
			return n, err
		}
	}
	if err := t.b.expiry.Delete(expiryKey(g.ExpiresAt, kindGrant, id)); err != nil {
		return n, err
	}
	return n + 1, t.b.grants.Delete([]byte(id))
}

func (t *txn) revokeGrant(id string, until time.Time) error {
	if _, err := t.deleteGrant(id); err != nil {
		return err
	}
	return t.deny(storage.DenyEntry{Kind: storage.DenyGrant, ID: id, Until: until})
}

func (t *txn) refreshToken(jti string) (storage.RefreshToken, error) {
	var r storage.RefreshToken
	ok, err := getJSON(t.b.refresh, []byte(jti), &r)
	if err == nil && !ok {
		err = storage.ErrNotFound
	}
	return r, err
}

// putRefresh allowlists r. Its grant must exist (stored earlier in the same
// transaction or before), so no allowlist record ever names a missing
// grant; the grant's ExpiresAt is raised to r's when r outlives it.
func (t *txn) putRefresh(r storage.RefreshToken) error {
	switch {
	case r.JTI == "":
		return errors.New("refresh token JTI is empty")
	case r.GrantID == "":
		return fmt.Errorf("refresh token %s: GrantID is empty", r.JTI)
	case r.ExpiresAt.IsZero():
		return fmt.Errorf("refresh token %s: ExpiresAt is zero", r.JTI)
	}
	if t.b.refresh.Get([]byte(r.JTI)) != nil {
		return fmt.Errorf("refresh token %s: %w", r.JTI, storage.ErrAlreadyExists)
	}
	g, ok, err := t.grant(r.GrantID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("refresh token %s names grant %s, which is not stored: %w", r.JTI, r.GrantID, storage.ErrNotFound)
	}
	if r.ExpiresAt.After(g.ExpiresAt) {
		g.ExpiresAt = r.ExpiresAt
		if err := t.putGrant(g); err != nil {
			return err
		}
	}
	if err := t.putJSON(t.b.refresh, []byte(r.JTI), r); err != nil {
		return err
	}
	if err := t.b.grantRefresh.Put(indexKey(r.GrantID, r.JTI), nil); err != nil {
		return err
	}
	return t.b.expiry.Put(expiryKey(r.ExpiresAt, kindRefresh, r.JTI), nil)
}

// deleteRefresh removes one allowlist record and its index entries; an
// unknown jti is no error. It reports whether a record was removed.
func (t *txn) deleteRefreshOK(jti string) (bool, error) {
	var r storage.RefreshToken
	ok, err := getJSON(t.b.refresh, []byte(jti), &r)
	if err != nil || !ok {
		return false, err
	}
	if err := t.b.grantRefresh.Delete(indexKey(r.GrantID, jti)); err != nil {
		return false, err
	}
	if err := t.b.expiry.Delete(expiryKey(r.ExpiresAt, kindRefresh, jti)); err != nil {
		return false, err
	}
	return true, t.b.refresh.Delete([]byte(jti))
}

func (t *txn) deleteRefresh(jti string) error {
	_, err := t.deleteRefreshOK(jti)
	return err
}

func (t *txn) deleteGrantRefreshCount(grantID string) (int, error) {
	n := 0
	for _, jti := range t.indexMembers(t.b.grantRefresh, grantID) {
		ok, err := t.deleteRefreshOK(jti)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

func (t *txn) deleteGrantRefresh(grantID string) error {
	_, err := t.deleteGrantRefreshCount(grantID)
	return err
}

func (t *txn) storeIssued(iss storage.Issued) error {
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
func (t *txn) deny(e storage.DenyEntry) error {
	if e.Kind != storage.DenyJTI && e.Kind != storage.DenyGrant {
		return fmt.Errorf("unknown denylist kind %q", e.Kind)
	}
	if e.ID == "" {
		return errors.New("denylist entry with empty id")
	}
	key := denyKey(e.Kind, e.ID)
	if v := t.b.deny.Get(key); len(v) == 8 {
		old := fromNanos(be64(v))
		if !old.Before(e.Until) {
			return nil
		}
		if err := t.b.expiry.Delete(expiryKey(old, kindDeny, string(key))); err != nil {
			return err
		}
	}
	if err := t.b.deny.Put(key, u64(nanos(e.Until))); err != nil {
		return err
	}
	if err := t.b.expiry.Put(expiryKey(e.Until, kindDeny, string(key)), nil); err != nil {
		return err
	}
	seq, err := t.b.denylog.NextSequence()
	if err != nil {
		return err
	}
	if err := t.b.denylog.Put(u64(seq), encodeLogEntry(e)); err != nil {
		return err
	}
	return t.b.expiry.Put(expiryKey(e.Until, kindLog, string(u64(seq))), nil)
}

func (t *txn) deleteLogin(id string) (bool, error) {
	var ls storage.LoginSession
	ok, err := getJSON(t.b.login, []byte(id), &ls)
	if err != nil || !ok {
		return false, err
	}
	if err := t.b.expiry.Delete(expiryKey(ls.ExpiresAt, kindLogin, id)); err != nil {
		return false, err
	}
	return true, t.b.login.Delete([]byte(id))
}

// purge removes up to batch records whose expiry is at or before now, as
// listed by the expiry index. more reports that the batch was full.
func (t *txn) purge(now time.Time, batch int) (removed int, more bool, err error) {
	limit := nanos(now)
	var keys [][]byte
	c := t.b.expiry.Cursor()
	for k, _ := c.First(); k != nil && len(k) > 8 && be64(k) <= limit; k, _ = c.Next() {
		if len(keys) == batch {
			more = true
			break
		}
		keys = append(keys, append([]byte(nil), k...))
	}
	for _, k := range keys {
		id := string(k[9:])
		var n int
		switch k[8] {
		case kindCode:
			if t.b.codes.Get([]byte(id)) != nil {
				n = 1
				err = t.b.codes.Delete([]byte(id))
			}
		case kindRefresh:
			var ok bool
			ok, err = t.deleteRefreshOK(id)
			if ok {
				n = 1
			}
		case kindGrant:
			n, err = t.deleteGrant(id)
		case kindDeny:
			if t.b.deny.Get([]byte(id)) != nil {
				n = 1
				err = t.b.deny.Delete([]byte(id))
			}
		case kindLog:
			err = t.b.denylog.Delete([]byte(id))
		case kindLogin:
			var ok bool
			ok, err = t.deleteLogin(id)
			if ok {
				n = 1
			}
		case kindLoginFailures:
			// The index entry is moved whenever the record's expiry
			// changes, so an entry due now names an expired record.
			if t.b.loginFailures.Get([]byte(id)) != nil {
				n = 1
				err = t.b.loginFailures.Delete([]byte(id))
			}
		default:
			err = fmt.Errorf("expiry index entry of unknown kind %q", k[8])
		}
		if err != nil {
			return removed, false, err
		}
		removed += n
		if err := t.b.expiry.Delete(k); err != nil {
			return removed, false, err
		}
	}
	return removed, more, nil
}

// indexMembers lists the members stored under owner in an index bucket
// (grant -> refresh tokens, sid -> grants), copied out of the transaction.
func (t *txn) indexMembers(b *bolt.Bucket, owner string) []string {
	prefix := indexPrefix(owner)
	var out []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

// indexPrefix is owner with its length in front (2 bytes, big endian), so
// that no owner's prefix is a prefix of another's ("ab"+"c" and "a"+"bc"
// never collide).
func indexPrefix(owner string) []byte {
	n := min(len(owner), math.MaxUint16)
	b := make([]byte, 2, 2+n)
	binary.BigEndian.PutUint16(b, uint16(n))
	return append(b, owner[:n]...)
}

func indexKey(owner, member string) []byte {
	return append(indexPrefix(owner), member...)
}

// denyKey is kind, a NUL, then id: kinds never hold a NUL, so the split is
// unambiguous.
func denyKey(kind storage.DenyKind, id string) []byte {
	b := make([]byte, 0, len(kind)+1+len(id))
	b = append(b, kind...)
	b = append(b, 0)
	return append(b, id...)
}

// expiryKey orders records by expiry: 8-byte big-endian nanoseconds, the
// kind byte, the record's key.
func expiryKey(t time.Time, kind byte, id string) []byte {
	b := make([]byte, 9, 9+len(id))
	binary.BigEndian.PutUint64(b, nanos(t))
	b[8] = kind
	return append(b, id...)
}

// encodeLogEntry is 8 bytes of Until, the kind, a NUL and the id.
func encodeLogEntry(e storage.DenyEntry) []byte {
	return append(u64(nanos(e.Until)), denyKey(e.Kind, e.ID)...)
}

func decodeLogEntry(v []byte) (storage.DenyEntry, error) {
	if len(v) < 10 {
		return storage.DenyEntry{}, errors.New("truncated")
	}
	rest := v[8:]
	i := bytes.IndexByte(rest, 0)
	if i < 0 {
		return storage.DenyEntry{}, errors.New("no kind separator")
	}
	return storage.DenyEntry{
		Kind:  storage.DenyKind(rest[:i]),
		ID:    string(rest[i+1:]),
		Until: fromNanos(be64(v)),
	}, nil
}

// nanos maps t onto an unsigned, order-preserving number: Unix
// nanoseconds, clamped to [1970, 2262-04-11] (what an int64 holds).
func nanos(t time.Time) uint64 {
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

func fromNanos(n uint64) time.Time { return time.Unix(0, int64(n)).UTC() }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func be64(b []byte) uint64 { return binary.BigEndian.Uint64(b[:8]) }
