package codec

import (
	"bytes"
	"crypto/subtle"
	"sync"

	"github.com/bffgate/bffgate/session"
)

// OpenCache remembers recently opened records, so that reading a session
// whose record has not changed skips AES-GCM and decoding: with a
// server-side store that is about a fifth of the gateway's CPU per proxied
// request (e2e/bench's profiles). An entry is used only when both the
// ticket (id and key) and the record bytes are exactly those it was opened
// with, so the cache never returns what Open would refuse, and any write
// (a new record, with a new nonce) misses it.
//
// Written by hand: the cache must compare the record and the key on every
// hit, which no general-purpose cache library does for us.
type OpenCache struct {
	mu  sync.Mutex
	max int
	m   map[[TicketIDSize]byte]*openEntry
}

type openEntry struct {
	key [TicketKeySize]byte
	rec []byte
	s   session.Session
}

// NewOpenCache returns a cache of at most max sessions (max <= 0: 2048).
func NewOpenCache(max int) *OpenCache {
	if max <= 0 {
		max = 2048
	}
	return &OpenCache{max: max, m: make(map[[TicketIDSize]byte]*openEntry, max)}
}

// Open is Open(t, record), served from the cache when it can be. The
// returned session shares no memory with the cache or record. A nil cache
// opens every time.
func (c *OpenCache) Open(t Ticket, record []byte) (*session.Session, error) {
	if c == nil {
		return Open(t, record)
	}
	c.mu.Lock()
	e := c.m[t.id]
	c.mu.Unlock()
	if e != nil && subtle.ConstantTimeCompare(e.key[:], t.key[:]) == 1 && bytes.Equal(e.rec, record) {
		s := e.s
		s.Claims = bytes.Clone(e.s.Claims)
		return &s, nil
	}
	s, err := Open(t, record)
	if err != nil {
		return nil, err
	}
	ne := &openEntry{key: t.key, rec: bytes.Clone(record), s: *s}
	ne.s.Claims = bytes.Clone(s.Claims)
	c.mu.Lock()
	if _, ok := c.m[t.id]; !ok && len(c.m) >= c.max {
		for k := range c.m { // map order is random: a random eviction
			delete(c.m, k)
			break
		}
	}
	c.m[t.id] = ne
	c.mu.Unlock()
	return s, nil
}

// Forget drops the ticket's entry (the session was deleted).
func (c *OpenCache) Forget(t Ticket) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.m, t.id)
	c.mu.Unlock()
}
