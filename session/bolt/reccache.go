package bolt

import "sync"

// recCacheMax bounds the records recCache holds (records are one to a few
// KB each: tens of MB at most).
const recCacheMax = 4096

// recCache remembers session records as last read from the data file, so
// that the gateway's read of an unchanged session skips bbolt's read
// transaction (with the opened-session cache, about a tenth of the
// gateway's CPU per proxied request in e2e/bench's profiles). The data
// file is open in this process only and every record write goes through
// the Store, whose write transactions tell the cache, after they commit,
// which records they changed (forget); so a remembered record is the one
// in the file. The records are ciphertext: the ticket's key still has to
// open them (codec.OpenCache), so the cache grants nothing.
//
// A read that raced a write must not remember what it read: get returns
// the generation before the read, and put remembers only if no write has
// committed since.
//
// Written by hand: the generation rule is specific to this store.
type recCache struct {
	mu   sync.Mutex
	max  int
	gen  uint64
	recs map[string][]byte
}

func newRecCache(max int) *recCache {
	return &recCache{max: max, recs: make(map[string][]byte)}
}

// get returns the remembered record of id (nil if none) and the current
// generation, to hand to put after a read from the file.
func (c *recCache) get(id []byte) ([]byte, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recs[string(id)], c.gen
}

// put remembers rec as id's record if no write committed since get
// returned gen. rec must not change afterwards.
func (c *recCache) put(id, rec []byte, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if len(c.recs) >= c.max {
		for k := range c.recs { // map order is random: a random eviction
			delete(c.recs, k)
			break
		}
	}
	c.recs[string(id)] = rec
}

// forget drops id's record; called after a write to it committed.
func (c *recCache) forget(id []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.recs, string(id))
}
