package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bffgate/bffgate/session"
)

// Ticket sizes: a 16-byte random id names the record, a 32-byte random key
// (AES-256) seals it.
const (
	TicketIDSize  = 16
	TicketKeySize = 32
)

// TicketHandleLen is the length of a ticket handle:
// base64url(id || key) without padding.
var TicketHandleLen = base64.RawURLEncoding.EncodedLen(TicketIDSize + TicketKeySize)

// Ticket names and seals one session in a server-side store, following
// oauth2-proxy's session tickets: the handle the browser holds is
// base64url(id || key); the store keeps only AES-256-GCM(key, session) under
// the id. The key exists nowhere but in the cookie, so a copy of the store
// (a stolen bbolt file, a Redis dump) reveals no token, and a handle with a
// guessed or altered key opens nothing.
//
// A Ticket's String and slog value show the id only, never the key.
type Ticket struct {
	id  [TicketIDSize]byte
	key [TicketKeySize]byte
}

// NewTicket returns a ticket with a fresh random id and key from
// crypto/rand.
func NewTicket() (Ticket, error) {
	var t Ticket
	if _, err := rand.Read(t.id[:]); err != nil {
		return Ticket{}, fmt.Errorf("codec: ticket id: %w", err)
	}
	if _, err := rand.Read(t.key[:]); err != nil {
		return Ticket{}, fmt.Errorf("codec: ticket key: %w", err)
	}
	return t, nil
}

// ParseTicket decodes a handle made by Ticket.Handle. Anything else (wrong
// length, padding, characters outside base64url, non-zero trailing bits)
// yields ErrTicket. The checks depend only on the handle's length and
// alphabet, not on any stored secret.
func ParseTicket(handle string) (Ticket, error) {
	if len(handle) != TicketHandleLen {
		return Ticket{}, ErrTicket
	}
	// Decoded on the stack (no allocation for the handle every request
	// reads): the same checks as decodeCanonical.
	var src [64]byte // TicketHandleLen
	var raw [TicketIDSize + TicketKeySize]byte
	defer clear(raw[:])
	n := copy(src[:], handle)
	if !canonicalAlphabet(handle) {
		return Ticket{}, ErrTicket
	}
	if m, err := base64.RawURLEncoding.Strict().Decode(raw[:], src[:n]); err != nil || m != len(raw) {
		return Ticket{}, ErrTicket
	}
	clear(src[:])
	var t Ticket
	copy(t.id[:], raw[:TicketIDSize])
	copy(t.key[:], raw[TicketIDSize:])
	return t, nil
}

// Handle returns base64url(id || key), the value of the session cookie.
func (t Ticket) Handle() string {
	var raw [TicketIDSize + TicketKeySize]byte
	copy(raw[:], t.id[:])
	copy(raw[TicketIDSize:], t.key[:])
	h := base64.RawURLEncoding.EncodeToString(raw[:])
	clear(raw[:])
	return h
}

// ID returns the id in base64url: the session's ID in a server-side store
// and the name of its record. It is no secret on its own (it opens nothing),
// but it is not sent to the browser as such either.
func (t Ticket) ID() string { return base64.RawURLEncoding.EncodeToString(t.id[:]) }

// IDBytes returns a copy of the raw 16-byte id (the bbolt record key).
func (t Ticket) IDBytes() []byte { return append([]byte(nil), t.id[:]...) }

// String shows the id only.
func (t Ticket) String() string { return "ticket(" + t.ID() + ")" }

// GoString shows the id only, so that %#v cannot print the key.
func (t Ticket) GoString() string { return t.String() }

// LogValue shows the id only.
func (t Ticket) LogValue() slog.Value { return slog.StringValue(t.ID()) }

// Meta is the part of a sealed record kept in the clear: what a store
// needs to sweep and to keep its sid and sub indexes without the key. It is
// authenticated (part of the GCM additional data) but not secret; it holds
// no token.
type Meta struct {
	SID       string
	Subject   string
	ExpiresAt time.Time // zero: never
}

// recordVersion is the first byte of a sealed record.
const recordVersion = 1

// MetaOf returns the Meta that Seal records for s.
func MetaOf(s *session.Session) Meta {
	return Meta{SID: s.SID, Subject: s.Subject, ExpiresAt: s.ExpiresAt()}
}

// Seal encodes s (without its ID, which the ticket carries) and encrypts it
// with AES-256-GCM under the ticket's key, a random nonce, and as
// additional data the ticket id and the clear header, so that a record
// cannot be moved to another id nor its header changed unnoticed.
//
//	record = version(1) | header | nonce(12) | ciphertext || tag
//	header = uvarint len, SID | uvarint len, Subject | ExpiresAt
//	         (a byte 0 for none, or 1 then varint seconds, uvarint nanos)
func Seal(t Ticket, s *session.Session) ([]byte, error) {
	c := *s
	c.ID = ""
	plain := Marshal(&c)
	defer clear(plain)
	meta := MetaOf(s)
	rec := []byte{recordVersion}
	rec = appendMeta(rec, meta)
	hdr := len(rec)
	aead, err := t.aead()
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("codec: nonce: %w", err)
	}
	rec = append(rec, nonce...)
	out := make([]byte, len(rec), len(rec)+len(plain)+aead.Overhead())
	copy(out, rec)
	return aead.Seal(out, nonce, plain, t.additionalData(out[:hdr])), nil
}

// Open decrypts a record made by Seal under the same ticket and returns
// the session, its ID set to the ticket's. Any failure (malformed record,
// wrong key, another id, altered header) yields an error wrapping
// ErrSealed. The returned session shares no memory with record.
func Open(t Ticket, record []byte) (*session.Session, error) {
	meta, hdr, err := parseMeta(record)
	if err != nil {
		return nil, err
	}
	aead, err := t.aead()
	if err != nil {
		return nil, err
	}
	rest := record[hdr:]
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: truncated", ErrSealed)
	}
	nonce, ct := rest[:aead.NonceSize()], rest[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, ct, t.additionalData(record[:hdr]))
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrSealed)
	}
	defer clear(plain)
	s, err := Unmarshal(plain)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSealed, err)
	}
	if s.SID != meta.SID || s.Subject != meta.Subject {
		return nil, fmt.Errorf("%w: header does not match the session", ErrSealed)
	}
	s.ID = t.ID()
	return s, nil
}

// ParseMeta reads the clear header of a record without opening it (a
// sweeper has no key). It is not authenticated until Open succeeds, so a
// store acts on it only for records it wrote itself.
func ParseMeta(record []byte) (Meta, error) {
	m, _, err := parseMeta(record)
	return m, err
}

func parseMeta(record []byte) (Meta, int, error) {
	if len(record) == 0 || record[0] != recordVersion {
		return Meta{}, 0, fmt.Errorf("%w: unknown record version", ErrSealed)
	}
	d := decoder{b: record[1:]}
	var m Meta
	m.SID = d.string("SID")
	m.Subject = d.string("Subject")
	if d.err == nil {
		if len(d.b) == 0 {
			d.fail("ExpiresAt", "missing")
		} else {
			flag := d.b[0]
			d.b = d.b[1:]
			switch flag {
			case 0:
			case 1:
				m.ExpiresAt = d.time("ExpiresAt")
			default:
				d.fail("ExpiresAt", "bad flag %d", flag)
			}
		}
	}
	if d.err != nil {
		return Meta{}, 0, fmt.Errorf("%w: header: %w", ErrSealed, d.err)
	}
	return m, len(record) - len(d.b), nil
}

func appendMeta(b []byte, m Meta) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.SID)))
	b = append(b, m.SID...)
	b = binary.AppendUvarint(b, uint64(len(m.Subject)))
	b = append(b, m.Subject...)
	if m.ExpiresAt.IsZero() {
		return append(b, 0)
	}
	return appendTime(append(b, 1), m.ExpiresAt)
}

func (t Ticket) aead() (cipher.AEAD, error) {
	block, err := aes.NewCipher(t.key[:])
	if err != nil {
		return nil, fmt.Errorf("codec: %w", err)
	}
	return cipher.NewGCM(block)
}

func (t Ticket) additionalData(header []byte) []byte {
	ad := make([]byte, 0, TicketIDSize+len(header))
	ad = append(ad, t.id[:]...)
	return append(ad, header...)
}

// SealNew is what a server-side store's Create does before it writes: it
// refuses a nil session or one already expired at now, and seals sess
// under a fresh ticket.
func SealNew(sess *session.Session, now time.Time) (Ticket, []byte, error) {
	if sess == nil {
		return Ticket{}, nil, errors.New("nil session")
	}
	if sess.Expired(now) {
		return Ticket{}, nil, fmt.Errorf("the session expired at %s, before it was stored; check the idle timeout and absolute lifetime", sess.ExpiresAt().Format(time.RFC3339))
	}
	tk, err := NewTicket()
	if err != nil {
		return Ticket{}, nil, err
	}
	rec, err := Seal(tk, sess)
	if err != nil {
		return Ticket{}, nil, err
	}
	return tk, rec, nil
}
