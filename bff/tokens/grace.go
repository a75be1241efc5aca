package tokens

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// GraceStore keeps short-lived grace records (see the package doc). Keys
// are hashes and values ciphertext: a backend never sees a token.
// Implementations are safe for concurrent use.
type GraceStore interface {
	// Put stores val under key for ttl unless a live value is already
	// there: then stored is false and nothing changes. The first rotation
	// of a refresh token published wins, so every holder of the old token
	// is handed the same new tokens.
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) (stored bool, err error)
	// Get returns the value stored under key; ok is false when there is
	// none or it has expired.
	Get(ctx context.Context, key string) (val []byte, ok bool, err error)
}

// MemoryGrace is the in-process GraceStore. The zero value is ready to
// use.
type MemoryGrace struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	mu    sync.Mutex
	m     map[string]graceEntry
	puts  int
	limit int
}

type graceEntry struct {
	val []byte
	exp time.Time
}

var _ GraceStore = (*MemoryGrace)(nil)

// NewMemoryGrace returns an empty in-process GraceStore on the system
// clock.
func NewMemoryGrace() *MemoryGrace { return &MemoryGrace{} }

func (g *MemoryGrace) now() time.Time {
	if g.Now != nil {
		return g.Now()
	}
	return time.Now()
}

// Put implements GraceStore. Expired records are swept as new ones come
// in, so the map holds about one grace window of rotations.
func (g *MemoryGrace) Put(_ context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m == nil {
		g.m = map[string]graceEntry{}
	}
	g.puts++
	if g.puts >= 64 && g.puts >= len(g.m)/2 {
		g.puts = 0
		for k, e := range g.m {
			if !now.Before(e.exp) {
				delete(g.m, k)
			}
		}
	}
	if e, ok := g.m[key]; ok && now.Before(e.exp) {
		return false, nil
	}
	g.m[key] = graceEntry{val: append([]byte(nil), val...), exp: now.Add(ttl)}
	return true, nil
}

// Get implements GraceStore.
func (g *MemoryGrace) Get(_ context.Context, key string) ([]byte, bool, error) {
	now := g.now()
	g.mu.Lock()
	defer g.mu.Unlock()
	e, ok := g.m[key]
	if !ok || !now.Before(e.exp) {
		return nil, false, nil
	}
	return append([]byte(nil), e.val...), true, nil
}

// graceRecord is what a rotation leaves behind for holders of the old
// refresh token.
type graceRecord struct {
	AccessToken  string    `json:"at"`
	RefreshToken string    `json:"rt"`
	IDToken      string    `json:"it,omitempty"`
	TokenType    string    `json:"tt,omitempty"`
	AccessExpiry time.Time `json:"exp,omitzero"`
}

// graceKey is the lookup key of the record left by rotating refreshToken
// away: a domain-separated SHA-256, so the key reveals nothing usable.
func graceKey(refreshToken string) string {
	h := sha256.New()
	h.Write([]byte("bffgate/tokens grace id\x00"))
	h.Write([]byte(refreshToken))
	return "grace:" + hex.EncodeToString(h.Sum(nil))
}

// graceAEAD derives the record's AES-256-GCM key from the old refresh
// token: only a holder of that token can read what replaced it.
func graceAEAD(refreshToken string) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, []byte(refreshToken), nil, "bffgate/tokens grace record", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func sealGrace(oldRefresh string, rec *graceRecord) ([]byte, error) {
	plain, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	aead, err := graceAEAD(oldRefresh)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return aead.Seal(nonce, nonce, plain, []byte(graceKey(oldRefresh))), nil
}

var errGraceCorrupt = errors.New("tokens: grace record does not decrypt")

func openGrace(oldRefresh string, sealed []byte) (*graceRecord, error) {
	aead, err := graceAEAD(oldRefresh)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, errGraceCorrupt
	}
	ns := aead.NonceSize()
	plain, err := aead.Open(nil, sealed[:ns], sealed[ns:], []byte(graceKey(oldRefresh)))
	if err != nil {
		return nil, errGraceCorrupt
	}
	var rec graceRecord
	if err := json.Unmarshal(plain, &rec); err != nil || rec.AccessToken == "" {
		return nil, fmt.Errorf("%w: %v", errGraceCorrupt, err)
	}
	return &rec, nil
}
