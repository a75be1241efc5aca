package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/bff/demoapi"
	"github.com/bffgate/bffgate/bff/spa"
	"github.com/bffgate/bffgate/bff/tokens/redistokens"
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
	sessioncookie "github.com/bffgate/bffgate/session/cookie"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// gatewayKeys returns the cookie key pairs: the configured ones, or one
// pair generated on first start and kept in the issuer's store (the data
// directory, or Redis, where every instance finds the same pair).
func gatewayKeys(ctx context.Context, rt *runtime) ([]keyPair, error) {
	pairs, err := cookieKeyPairs(rt.cfg.Gateway.Session.CookieKeys)
	if err != nil || len(pairs) > 0 {
		return pairs, err
	}
	h, err := rt.istore.Secret(ctx, "gateway/cookie-key/hash", randomBytes(32))
	if err != nil {
		return nil, fmt.Errorf("gateway: reading the generated cookie keys: %w", err)
	}
	b, err := rt.istore.Secret(ctx, "gateway/cookie-key/block", randomBytes(32))
	if err != nil {
		return nil, fmt.Errorf("gateway: reading the generated cookie keys: %w", err)
	}
	return []keyPair{{h, b}}, nil
}

// assertionKey returns the key that signs the gateway's identity
// assertions: generated on first start and kept in the issuer's store
// (the data directory, or Redis), so that every instance signs with the
// key its /bff/jwks publishes.
func assertionKey(ctx context.Context, rt *runtime) (*ecdsa.PrivateKey, error) {
	raw, err := rt.istore.Secret(ctx, "gateway/assertion-key", func() ([]byte, error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		return x509.MarshalPKCS8PrivateKey(k)
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: reading the identity assertion key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("gateway: the stored identity assertion key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("gateway: the stored identity assertion key is a %T, not an ECDSA key", k)
	}
	return ek, nil
}

// sessionStore builds a frontend's session store of kind (cookie, bbolt,
// redis) and what must run beside it (the bbolt sweeper, the Redis near
// cache's invalidation listener). name is the frontend's ("" for the
// classic single frontend): a named frontend's sessions live in a
// namespace of their own (bbolt buckets sessions@<name>/..., Redis keys
// <prefix>session:fe:<name>:...), the classic one's where every earlier
// release kept them.
func sessionStore(ctx context.Context, rt *runtime, pairs []keyPair, kind, name string, reg prometheus.Registerer) (session.Store, func(context.Context) error, error) {
	sc := rt.cfg.Gateway.Session
	log := rt.log.With("component", "session")
	if name != "" {
		log = log.With("frontend", name)
	}
	idle := func(context.Context) error { return nil }
	prefix := redisSessionPrefix(rt.cfg, name)
	switch kind {
	case "cookie":
		// Back-channel logout with cookie sessions: ended sids are
		// remembered in Redis when there is one (every instance sees them),
		// else in the data file, until the absolute lifetime has passed.
		var ended sessioncookie.EndedStore
		run := idle
		if rt.redis != nil {
			ended = sessionredis.NewEnded(rt.redis, redisEndedPrefix(rt.cfg, name))
		} else {
			e := sessionbolt.NewEndedIn(rt.db, name)
			ended = e
			run = func(ctx context.Context) error { e.Run(ctx, sc.SweepInterval, log); return nil }
		}
		ck := make([]sessioncookie.KeyPair, len(pairs))
		for i, p := range pairs {
			ck[i] = sessioncookie.KeyPair{Hash: p.hash, Block: p.block}
		}
		cc := sessioncookie.Config{Keys: ck, MaxSize: sc.MaxCookieBytes, MaxLifetime: sc.AbsoluteLifetime, Ended: ended}
		if name != "" {
			// The frontend under the MAC: another frontend's store, with
			// the same keys, opens none of its cookies.
			cc.Name = sessioncookie.DefaultName + "-" + name
		}
		st, err := sessioncookie.New(cc)
		return st, run, err
	case "redis":
		if rt.redis == nil {
			return nil, nil, fmt.Errorf("config: gateway.session.store: \"redis\" needs redis.url")
		}
		st, err := sessionredis.New(rt.redis, sessionredis.Config{
			Prefix: prefix, Logger: log, Registerer: reg, Cache: sc.RedisCache,
		})
		if err != nil {
			return nil, nil, err
		}
		if err := st.CheckPublish(ctx); err != nil {
			return nil, nil, fmt.Errorf("gateway.session.store: redis: %w", err)
		}
		return st, func(ctx context.Context) error { st.Run(ctx); return nil }, nil
	default:
		st, err := sessionbolt.New(rt.db, sessionbolt.Config{Logger: log, Registerer: reg, Namespace: name})
		if err != nil {
			return nil, nil, err
		}
		return st, func(ctx context.Context) error { st.Run(ctx, sc.SweepInterval); return nil }, nil
	}
}

// redisEndedPrefix is where a frontend's ended records (its cookie
// sessions' logouts) live in Redis, under redisSessionPrefix.
func redisEndedPrefix(cfg *Config, name string) string {
	return redisSessionPrefix(cfg, name) + "ended:"
}

// redisSessionPrefix is where a frontend's sessions live in Redis.
func redisSessionPrefix(cfg *Config, name string) string {
	if name == "" {
		return cfg.Redis.Prefix + "session:"
	}
	return cfg.Redis.Prefix + "session:fe:" + name + ":"
}

// gatewayParts are what every frontend's gateway shares: the cookie keys
// and the identity assertion key.
type gatewayParts struct {
	pairs     []keyPair
	assertion *ecdsa.PrivateKey
}

func loadGatewayParts(ctx context.Context, rt *runtime) (gatewayParts, error) {
	var p gatewayParts
	var err error
	if p.pairs, err = gatewayKeys(ctx, rt); err != nil {
		return p, err
	}
	if p.assertion, err = assertionKey(ctx, rt); err != nil {
		return p, err
	}
	return p, nil
}

// frontendBuild is what building one frontend needs: its bff.Config
// (without runtime pieces), its name, session store kind and SPA.
type frontendBuild struct {
	name  string
	bcfg  bff.Config
	store string
	spa   spa.Config
	// noSPA: the frontend serves no SPA (a frontend without spa.dir or
	// spa.dev_url).
	noSPA bool
	// wrapSPA adapts the SPA handler (a path prefix).
	wrapSPA func(fiber.Handler) fiber.Handler
	// reg, when set, receives the metrics of the frontend's gateway and
	// new store instead of frontendRegistry (a reload's staging).
	reg prometheus.Registerer
}

// registry is where the build's metrics go.
func (fb frontendBuild) registry(rt *runtime) prometheus.Registerer {
	if fb.reg != nil {
		return fb.reg
	}
	return frontendRegistry(rt, fb.name)
}

// classicBuild is the one frontend of a configuration without
// gateway.frontends.
func classicBuild(rt *runtime, embeddedSecret string) frontendBuild {
	gw := rt.cfg.Gateway
	bcfg := rt.cfg.gatewayConfig()
	if rt.cfg.embeddedClient() && gw.Provider.ClientID == embeddedClientID && gw.Provider.ClientSecret == "" {
		bcfg.Provider.ClientSecret = embeddedSecret
	}
	return frontendBuild{bcfg: bcfg, store: gw.Session.Store, spa: rt.cfg.spaConfig()}
}

// frontendBuildOf is gateway.frontends[i]'s build.
func frontendBuildOf(cfg *Config, i int) frontendBuild {
	f := cfg.Gateway.Frontends[i]
	bcfg := cfg.frontendConfig(i)
	if cfg.registersFrontendClient(f) {
		bcfg.Provider.ClientSecret = cfg.frontendSecrets[f.Name]
	}
	b := frontendBuild{name: f.Name, bcfg: bcfg, store: f.Session.Store, spa: f.SPA.Config,
		wrapSPA: func(h fiber.Handler) fiber.Handler { return frontendSPA(f, h) }}
	b.noSPA = f.SPA.Dir == "" && f.SPA.DevURL == ""
	return b
}

// frontendRegistry is where frontend name's metrics go: the registry as
// it is for the classic frontend, with frontend="<name>" otherwise.
func frontendRegistry(rt *runtime, name string) prometheus.Registerer {
	if name == "" {
		return rt.registry
	}
	return frontendRegisterer(rt.registry, name)
}

// buildFrontend makes one frontend's gateway on its session store, with
// its routes, SPA, and the provider (the embedded issuer, already
// listening, or the configured one), whose discovery it reads; run is the
// gateway's background work.
func buildFrontend(ctx context.Context, rt *runtime, parts gatewayParts, fb frontendBuild, store session.Store) (*bff.Gateway, func(context.Context) error, error) {
	reg := fb.registry(rt)
	logger := rt.log.With("component", "gateway")
	bcfg := fb.bcfg
	bcfg.Store = store
	bcfg.AssertionKey = parts.assertion
	for _, p := range parts.pairs {
		bcfg.Cookie.FlowKeys = append(bcfg.Cookie.FlowKeys, bff.KeyPair{Hash: p.hash, Block: p.block})
	}
	if rt.redis != nil {
		// Several instances, whatever the session store: one refresh per
		// session across all of them (the lock), and the rotated tokens
		// handed to whoever waited or still holds the old refresh token
		// (the grace record). With cookie sessions the grace record is
		// the only shared copy: the instance that waited cannot read the
		// cookie the winner set.
		prefix := rt.cfg.Redis.Prefix + "tokens:"
		if fb.name != "" {
			prefix += "fe:" + fb.name + ":"
		}
		bcfg.Tokens.Locker = redistokens.NewLocker(rt.redis, prefix, redistokens.WithLogger(logger))
		bcfg.Tokens.Grace = redistokens.NewGrace(rt.redis, prefix)
	}
	bcfg.Logger = logger
	bcfg.Registerer = reg
	bcfg.Gatherer = rt.registry

	if !fb.noSPA {
		spaCfg := fb.spa
		spaCfg.Logger = bcfg.Logger
		handler, err := spa.New(spaCfg)
		if err != nil {
			return nil, nil, err
		}
		if fb.wrapSPA != nil {
			handler = fb.wrapSPA(handler)
		}
		bcfg.SPA = handler
	}

	g, err := bff.NewGateway(ctx, bcfg)
	if err != nil {
		if fb.name != "" {
			err = fmt.Errorf("frontend %s: %w", fb.name, err)
		}
		return nil, nil, err
	}
	return g, g.Run, nil
}

// buildDemoAPI makes the demo resource server. With encrypted tokens it
// cannot verify them itself and introspects them with the gateway's client.
func buildDemoAPI(ctx context.Context, rt *runtime, clientSecret string) (*fiber.App, error) {
	d := rt.cfg.DemoAPI
	mode := d.Mode
	if mode == "auto" {
		mode = "jwks"
		if rt.cfg.Issuer.Tokens.Format == "encrypted" {
			mode = "introspect"
		}
	}
	api, err := demoapi.New(ctx, demoapi.Config{
		Issuer:                    rt.cfg.Issuer.URL,
		Audience:                  d.Audience,
		Mode:                      mode,
		IntrospectionClientID:     embeddedClientID,
		IntrospectionClientSecret: clientSecret,
		Logger:                    rt.log.With("component", "demoapi"),
		Registerer:                rt.registry,
		Gatherer:                  rt.registry,
		AccessLog:                 rt.cfg.Log.Access,
	})
	if err != nil {
		return nil, err
	}
	return api.App(), nil
}
