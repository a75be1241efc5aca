package token

import (
	"crypto/sha256"
	"maps"
	"slices"
	"sync"
	"time"
)

// verifiedMax bounds the verified-token cache: about 0.5 KiB an entry.
const verifiedMax = 10000

// verifiedCache remembers the claims of access tokens whose signature (or
// JWE tag) the codec has checked, keyed by the SHA-256 of the whole
// token. Introspection, userinfo and token exchange see the same access
// token many times in its few minutes of life, and its RS256 signature
// check was a third of an introspection's CPU; a hit costs one hash.
//
// A hit is as strong as a verification: the key is a collision-resistant
// hash of every byte of the token, so only the token that was verified
// finds its entry, and the entry holds the kid that verified it, which
// must still be in the key set (a key removed from the set stops its
// tokens at once, cached or not). Time checks (exp, nbf, iat) run on every
// Parse, hit or miss; revocation is the caller's, as always.
type verifiedCache struct {
	mu sync.RWMutex
	m  map[[32]byte]verifiedEntry
}

type verifiedEntry struct {
	cl  *Claims // never handed out: Parse returns a copy
	kid string
	jwe bool // the kid names a dir key (encrypted format), else a signing key
}

func (v *verifiedCache) get(sum [32]byte) (verifiedEntry, bool) {
	v.mu.RLock()
	e, ok := v.m[sum]
	v.mu.RUnlock()
	return e, ok
}

// put stores e. When the cache is full it first drops the entries that
// have expired at now and, if none had, an arbitrary tenth of them (Go's
// map order): a bound, not an LRU, since any token may be asked again.
func (v *verifiedCache) put(sum [32]byte, e verifiedEntry, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = make(map[[32]byte]verifiedEntry)
	}
	if len(v.m) >= verifiedMax {
		for k, old := range v.m {
			if !now.Before(old.cl.Expiry) {
				delete(v.m, k)
			}
		}
		for k := range v.m {
			if len(v.m) < verifiedMax-verifiedMax/10 {
				break
			}
			delete(v.m, k)
		}
	}
	v.m[sum] = e
}

// copyClaims returns a copy of cl that its caller may change.
func copyClaims(cl *Claims) *Claims {
	cp := *cl
	cp.Audience = slices.Clone(cl.Audience)
	cp.Extra = maps.Clone(cl.Extra)
	return &cp
}

// cachedAccess returns the claims of raw, an access token verified
// before, when its key is still in the set.
func (c *Codec) cachedAccess(sum [32]byte) (*Claims, bool) {
	e, ok := c.verified.get(sum)
	if !ok {
		return nil, false
	}
	if e.jwe {
		if _, ok := c.keys.DecryptionKey(e.kid); !ok {
			return nil, false
		}
	} else if _, alg, ok := c.keys.VerificationKey(e.kid); !ok || alg != c.alg {
		return nil, false
	}
	return copyClaims(e.cl), true
}

func accessSum(raw string) [32]byte { return sha256.Sum256([]byte(raw)) }
