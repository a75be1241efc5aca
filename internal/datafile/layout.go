package datafile

import (
	"encoding/binary"
	"math"
	"time"
)

// DefaultIssuerPrefix starts the issuer's bucket names.
const DefaultIssuerPrefix = "issuer."

// IssuerBuckets are the bucket names of the issuer's state under one
// prefix.
type IssuerBuckets struct {
	Keys, Secrets, Codes, Grants, Refresh, GrantRefresh, SIDGrants,
	Deny, DenyLog, Login, Expiry, LoginFailures []byte
	// Assertions holds the replay records of client assertions (jti
	// digests, until the assertion's expiry); Clients the operator-set
	// client states (bffgate agents disable/enable).
	Assertions, Clients []byte
	// Registrations holds dynamically registered clients (RFC 7591);
	// Consents the consents users gave third-party clients.
	Registrations, Consents []byte
	// Health is the bucket of the issuer's readiness probe.
	Health string
}

// Issuer returns the issuer's bucket names under prefix ("" means
// DefaultIssuerPrefix).
func Issuer(prefix string) IssuerBuckets {
	if prefix == "" {
		prefix = DefaultIssuerPrefix
	}
	n := func(s string) []byte { return []byte(prefix + s) }
	return IssuerBuckets{
		Keys:         n("keys"),
		Secrets:      n("secrets"),
		Codes:        n("codes"),
		Grants:       n("grants"),
		Refresh:      n("refresh"),
		GrantRefresh: n("grant_refresh"),
		SIDGrants:    n("sid_grants"),
		Deny:         n("denylist"),
		DenyLog:      n("denylog"),
		Login:        n("login_sessions"),
		Expiry:       n("expiry"),
		// Added after the first release: created in existing files on
		// their first open by a later one.
		LoginFailures: n("login_failures"),
		Assertions:    n("assertions"),
		Clients:       n("clients"),
		Registrations: n("registrations"),
		Consents:      n("consents"),
		Health:        prefix + "health",
	}
}

// All lists every bucket of b (Health excepted: its probe creates it).
func (b IssuerBuckets) All() [][]byte {
	return [][]byte{b.Keys, b.Secrets, b.Codes, b.Grants, b.Refresh, b.GrantRefresh, b.SIDGrants, b.Deny, b.DenyLog, b.Login, b.Expiry, b.LoginFailures, b.Assertions, b.Clients, b.Registrations, b.Consents}
}

// The gateway's session buckets.
const (
	SessionRecords  = "sessions/records"
	SessionsBySID   = "sessions/by_sid"
	SessionsBySub   = "sessions/by_sub"
	SessionExpiry   = "sessions/expiry"
	SessionEndedSID = "sessions/ended_sid"
	SessionEndedSub = "sessions/ended_sub"
	// SessionHealth and SessionEndedHealth are the buckets of the session
	// store's and the ended records' readiness probes.
	SessionHealth      = "sessions/health"
	SessionEndedHealth = "sessions/ended_health"
)

// SessionBuckets are the bucket names of one session namespace.
type SessionBuckets struct {
	Records, BySID, BySub, Expiry, EndedSID, EndedSub []byte
	// Health and EndedHealth are the readiness probes' buckets.
	Health, EndedHealth string
}

// Sessions returns the session buckets of a namespace: the first
// release's names (sessions/records, ...) for "", the classic single
// frontend, and sessions@<namespace>/records, ... for a named frontend,
// so that one frontend's tickets name nothing in another's and ending by
// sid or subject never reaches across.
func Sessions(namespace string) SessionBuckets {
	if namespace == "" {
		return SessionBuckets{
			Records: []byte(SessionRecords), BySID: []byte(SessionsBySID), BySub: []byte(SessionsBySub),
			Expiry: []byte(SessionExpiry), EndedSID: []byte(SessionEndedSID), EndedSub: []byte(SessionEndedSub),
			Health: SessionHealth, EndedHealth: SessionEndedHealth,
		}
	}
	p := "sessions@" + namespace + "/"
	return SessionBuckets{
		Records: []byte(p + "records"), BySID: []byte(p + "by_sid"), BySub: []byte(p + "by_sub"),
		Expiry: []byte(p + "expiry"), EndedSID: []byte(p + "ended_sid"), EndedSub: []byte(p + "ended_sub"),
		Health: p + "health", EndedHealth: p + "ended_health",
	}
}

// All lists every bucket of b, the probes' included.
func (b SessionBuckets) All() [][]byte {
	return [][]byte{b.Records, b.BySID, b.BySub, b.Expiry, b.EndedSID, b.EndedSub, []byte(b.Health), []byte(b.EndedHealth)}
}

// Nanos maps t onto an unsigned, order-preserving number: Unix
// nanoseconds, clamped to [1970, 2262-04-11] (what an int64 holds). It is
// the stored form of every time in the file.
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

// U64 is v in 8 bytes, big endian (sorts as v).
func U64(v uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v) }

// BE64 reads the first 8 bytes of b, big endian; b must hold them.
func BE64(b []byte) uint64 { return binary.BigEndian.Uint64(b[:8]) }

// IssuerIndexPrefix is owner with its length in front (2 bytes, big
// endian), so that no owner's prefix is a prefix of another's ("ab"+"c"
// and "a"+"bc" never collide). Owners longer than 65535 bytes are cut.
func IssuerIndexPrefix(owner string) []byte {
	n := min(len(owner), math.MaxUint16)
	b := make([]byte, 2, 2+n)
	binary.BigEndian.PutUint16(b, uint16(n))
	return append(b, owner[:n]...)
}

// IssuerIndexKey is IssuerIndexPrefix(owner) followed by member.
func IssuerIndexKey(owner, member string) []byte {
	return append(IssuerIndexPrefix(owner), member...)
}

// IssuerExpiryKey orders the issuer's records by expiry: Nanos(at) in 8
// bytes big endian, the kind byte, the record's key.
func IssuerExpiryKey(at time.Time, kind byte, id string) []byte {
	b := make([]byte, 9, 9+len(id))
	binary.BigEndian.PutUint64(b, Nanos(at))
	b[8] = kind
	return append(b, id...)
}

// SessionIndexPrefix is uvarint(len(v)) followed by v: the length prefix
// keeps one value's keys from matching another value that extends it.
func SessionIndexPrefix(v string) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(v)), uint64(len(v)))
	return append(k, v...)
}

// SessionIndexKey is SessionIndexPrefix(v) followed by the session id.
func SessionIndexKey(v string, id []byte) []byte {
	k := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(v)+len(id)), uint64(len(v)))
	k = append(k, v...)
	return append(k, id...)
}

// SessionExpiryKey orders sessions by expiry: Nanos(at) in 8 bytes big
// endian, then the session id.
func SessionExpiryKey(at time.Time, id []byte) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(id)), Nanos(at))
	return append(k, id...)
}
