package redistokens

import (
	"context"
	"errors"
	"fmt"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/bff/tokens"
)

// Grace is a tokens.GraceStore on Redis, shared by every gateway instance
// that shares the cookie keys (see the package doc). It is safe for
// concurrent use. It does not own the client: the caller closes it.
type Grace struct {
	rdb    goredis.UniversalClient
	prefix string
}

var _ tokens.GraceStore = (*Grace)(nil)

// NewGrace returns a Grace on client whose keys start with prefix
// (DefaultPrefix when empty). With a nil client every call fails with an
// error matching tokens.ErrProviderUnavailable.
func NewGrace(client goredis.UniversalClient, prefix string) *Grace {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Grace{rdb: client, prefix: prefix}
}

// Put implements tokens.GraceStore with SET NX PX: the first record for a
// key wins across instances, and Redis drops it when ttl (at least a
// millisecond) runs out. val is stored as given: the Manager has sealed it.
func (g *Grace) Put(ctx context.Context, key string, val []byte, ttl time.Duration) (bool, error) {
	if g.rdb == nil {
		return false, errNoClient
	}
	if ttl <= 0 {
		// go-redis reads 0 as "no expiry": a grace record must expire.
		return false, fmt.Errorf("redistokens: grace record ttl %v must be positive (tokens.Config.GraceWindow)", ttl)
	}
	ttl = max(ttl, time.Millisecond)
	stored, err := g.rdb.SetNX(ctx, g.prefix+key, val, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("%w: redistokens: storing a grace record: %w", tokens.ErrProviderUnavailable, err)
	}
	return stored, nil
}

// Get implements tokens.GraceStore.
func (g *Grace) Get(ctx context.Context, key string) ([]byte, bool, error) {
	if g.rdb == nil {
		return nil, false, errNoClient
	}
	val, err := g.rdb.Get(ctx, g.prefix+key).Bytes()
	if errors.Is(err, goredis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("%w: redistokens: reading a grace record: %w", tokens.ErrProviderUnavailable, err)
	}
	return val, true, nil
}

var errNoClient = fmt.Errorf("%w: redistokens: the Grace store has no Redis client (NewGrace was given nil)", tokens.ErrProviderUnavailable)
