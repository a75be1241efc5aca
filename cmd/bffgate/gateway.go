package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"

	"github.com/gofiber/fiber/v2"

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

// sessionStore builds the configured session store and what must run
// beside it (the bbolt sweeper, the Redis near cache's invalidation
// listener).
func sessionStore(ctx context.Context, rt *runtime, pairs []keyPair) (session.Store, func(context.Context) error, error) {
	sc := rt.cfg.Gateway.Session
	log := rt.log.With("component", "session")
	idle := func(context.Context) error { return nil }
	switch sc.Store {
	case "cookie":
		// Back-channel logout with cookie sessions: ended sids are
		// remembered in Redis when there is one (every instance sees them),
		// else in the data file, until the absolute lifetime has passed.
		var ended sessioncookie.EndedStore
		run := idle
		if rt.redis != nil {
			ended = sessionredis.NewEnded(rt.redis, rt.cfg.Redis.Prefix+"session:ended:")
		} else {
			e := sessionbolt.NewEnded(rt.db)
			ended = e
			run = func(ctx context.Context) error { e.Run(ctx, sc.SweepInterval, log); return nil }
		}
		ck := make([]sessioncookie.KeyPair, len(pairs))
		for i, p := range pairs {
			ck[i] = sessioncookie.KeyPair{Hash: p.hash, Block: p.block}
		}
		st, err := sessioncookie.New(sessioncookie.Config{
			Keys: ck, MaxSize: sc.MaxCookieBytes, MaxLifetime: sc.AbsoluteLifetime, Ended: ended,
		})
		return st, run, err
	case "redis":
		if rt.redis == nil {
			return nil, nil, fmt.Errorf("config: gateway.session.store: \"redis\" needs redis.url")
		}
		st, err := sessionredis.New(rt.redis, sessionredis.Config{
			Prefix: rt.cfg.Redis.Prefix + "session:", Logger: log, Registerer: rt.registry, Cache: sc.RedisCache,
		})
		if err != nil {
			return nil, nil, err
		}
		if err := st.CheckPublish(ctx); err != nil {
			return nil, nil, fmt.Errorf("gateway.session.store: redis: %w", err)
		}
		return st, func(ctx context.Context) error { st.Run(ctx); return nil }, nil
	default:
		st, err := sessionbolt.New(rt.db, sessionbolt.Config{Logger: log, Registerer: rt.registry})
		if err != nil {
			return nil, nil, err
		}
		return st, func(ctx context.Context) error { st.Run(ctx, sc.SweepInterval); return nil }, nil
	}
}

// buildGateway makes the gateway: session store, routes, SPA, and the
// provider (the embedded issuer, already listening, or the configured one).
func buildGateway(ctx context.Context, rt *runtime, embeddedSecret string) (*fiber.App, func(context.Context) error, error) {
	gw := rt.cfg.Gateway
	pairs, err := gatewayKeys(ctx, rt)
	if err != nil {
		return nil, nil, err
	}
	store, sweep, err := sessionStore(ctx, rt, pairs)
	if err != nil {
		return nil, nil, err
	}

	bcfg := rt.cfg.gatewayConfig()
	if rt.cfg.embeddedClient() && gw.Provider.ClientID == embeddedClientID && gw.Provider.ClientSecret == "" {
		bcfg.Provider.ClientSecret = embeddedSecret
	}
	bcfg.Store = store
	if bcfg.AssertionKey, err = assertionKey(ctx, rt); err != nil {
		return nil, nil, err
	}
	for _, p := range pairs {
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
		bcfg.Tokens.Locker = redistokens.NewLocker(rt.redis, prefix, redistokens.WithLogger(rt.log.With("component", "gateway")))
		bcfg.Tokens.Grace = redistokens.NewGrace(rt.redis, prefix)
	}
	bcfg.Logger = rt.log.With("component", "gateway")
	bcfg.Registerer = rt.registry
	bcfg.Gatherer = rt.registry

	spaCfg := rt.cfg.spaConfig()
	spaCfg.Logger = bcfg.Logger
	handler, err := spa.New(spaCfg)
	if err != nil {
		return nil, nil, err
	}
	bcfg.SPA = handler

	g, err := bff.New(ctx, bcfg)
	if err != nil {
		return nil, nil, err
	}
	run := func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- sweep(ctx) }()
		err := g.Run(ctx)
		if serr := <-errc; err == nil {
			err = serr
		}
		return err
	}
	return g.App(), run, nil
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
