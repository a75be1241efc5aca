package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/issuer/storage"
)

// Config configures a Store.
type Config struct {
	// Prefix starts every key (and the pub/sub channel), keeping the
	// issuer's keys apart from other users of the Redis and letting an ACL
	// user be limited to them (~bffgate:*). Default "bffgate:". It must not
	// contain '{' or '}': the Store adds its own hash tag.
	Prefix string
	// TTLGrace is added to each record's expiry to give its Redis TTL, the
	// backstop that removes records when no instance purges. Purge removes
	// them at their expiry. Default 10 minutes.
	TTLGrace time.Duration
	// MaxRetries bounds how many times a transaction is tried while it
	// loses optimistic races (another client changed a key it WATCHed);
	// then it fails with ErrConflict, nothing of it applied. Default 50.
	MaxRetries int
	// PurgeBatch is how many expired records Purge removes per
	// transaction. Default 200.
	PurgeBatch int
	// Now is the clock that seeds the change-log sequence; nil means
	// time.Now. Record expiry always comes from the times callers pass.
	Now func() time.Time
	// Logger receives subscription failures and transactions that gave
	// up; nil means slog.Default().
	Logger *slog.Logger
	// Registerer receives the engine's metrics (transactions run again
	// after a conflict, and those that gave up); nil means none are
	// registered.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the defaults New fills in.
func DefaultConfig() Config {
	return Config{Prefix: "bffgate:", TTLGrace: 10 * time.Minute, MaxRetries: 50, PurgeBatch: 200}
}

// withDefaults checks cfg for client and fills in the defaults.
func (cfg Config) withDefaults(client goredis.UniversalClient) (Config, error) {
	if client == nil {
		return cfg, errors.New("redis: New: client is nil")
	}
	if _, ok := client.(*goredis.Ring); ok {
		return cfg, errors.New("redis: New: a Ring client cannot keep the issuer's keys in one slot; use a single, Sentinel (failover) or Cluster client")
	}
	def := DefaultConfig()
	if cfg.Prefix == "" {
		cfg.Prefix = def.Prefix
	}
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return cfg, fmt.Errorf("redis: Config.Prefix %q contains '{' or '}'; remove them (the store adds the hash tag {issuer} itself)", cfg.Prefix)
	}
	switch {
	case cfg.TTLGrace < 0:
		return cfg, fmt.Errorf("redis: Config.TTLGrace is %v; it must be positive (0 means %v)", cfg.TTLGrace, def.TTLGrace)
	case cfg.MaxRetries < 0:
		return cfg, fmt.Errorf("redis: Config.MaxRetries is %d; it must be positive (0 means %d)", cfg.MaxRetries, def.MaxRetries)
	case cfg.PurgeBatch < 0:
		return cfg, fmt.Errorf("redis: Config.PurgeBatch is %d; it must be positive (0 means %d)", cfg.PurgeBatch, def.PurgeBatch)
	}
	if cfg.TTLGrace == 0 {
		cfg.TTLGrace = def.TTLGrace
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = def.MaxRetries
	}
	if cfg.PurgeBatch == 0 {
		cfg.PurgeBatch = def.PurgeBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return cfg, nil
}

// Store is the issuer's storage.Store on Redis: the rules of
// storage.Rules on the Redis Engine, with the login throttle as Lua
// scripts (see login.go) and the denylist's push (Subscribe). It is safe
// for concurrent use. It does not own the client: the caller closes it.
type Store struct {
	*storage.Rules
	eng *Engine
	rdb goredis.UniversalClient
	cfg Config
	log *slog.Logger
	k   keys
}

var _ storage.Store = (*Store)(nil)

// New returns a Store on client.
func New(client goredis.UniversalClient, cfg Config) (*Store, error) {
	eng, err := NewEngine(client, cfg)
	if err != nil {
		return nil, err
	}
	rules, err := storage.NewRules(eng, storage.RulesConfig{PurgeBatch: eng.cfg.PurgeBatch})
	if err != nil {
		return nil, err
	}
	return &Store{
		Rules: rules,
		eng:   eng,
		rdb:   client,
		cfg:   eng.cfg,
		log:   eng.cfg.Logger.With("subsystem", "storage.redis"),
		k:     eng.k,
	}, nil
}

// unavailable reports whether err, an error of a Redis call, means Redis
// could not be reached or could not serve (a refused or broken
// connection, a pool timeout, a closed client, a deadline, a server that
// is loading, read-only or without a cluster quorum), as opposed to an
// answer about the command itself or the caller's cancel. Callers answer
// 503 and retry later.
func unavailable(err error) bool {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, goredis.TxFailedErr):
		return false
	case errors.Is(err, goredis.ErrClosed), errors.Is(err, goredis.ErrPoolTimeout),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var rerr goredis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY ", "NOREPLICAS"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	// What remains comes from the connection (io.EOF, a reset, a refused
	// dial, a timeout, a TLS failure), not from a command's reply.
	return true
}
