package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	goredis "github.com/redis/go-redis/v9"
	bbolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/bffgate/bffgate/internal/adminsock"
	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/denylist"
	"github.com/bffgate/bffgate/issuer/keys"
	"github.com/bffgate/bffgate/issuer/storage"
	issuerbolt "github.com/bffgate/bffgate/issuer/storage/bolt"
	issuerredis "github.com/bffgate/bffgate/issuer/storage/redis"
)

// demoUser and demoPassword exist only in the zero-config run.
const (
	demoUser     = "demo"
	demoPassword = "demo"
)

// embeddedClientID is the client the gateway registers at the embedded
// issuer for itself.
const embeddedClientID = "bffgate"

// dataFile is the bbolt file in the data directory.
const dataFile = "bffgate.db"

func hashPassword(pw string) (string, error) { return issuer.HashPassword(pw) }

// keyPair is a decoded gateway cookie key pair.
type keyPair struct{ hash, block []byte }

func cookieKeyPairs(list []CookieKey) ([]keyPair, error) {
	var out []keyPair
	for i, k := range list {
		h, err := decodeKey(k.Hash)
		if err != nil || (len(h) != 32 && len(h) != 64) {
			return nil, &KeyError{Key: fmt.Sprintf("gateway.session.cookie_keys[%d].hash", i), Msg: "(hidden) is not allowed: want 32 or 64 random bytes, base64 encoded (openssl rand -base64 32)"}
		}
		b, err := decodeKey(k.Block)
		if err != nil || (len(b) != 16 && len(b) != 24 && len(b) != 32) {
			return nil, &KeyError{Key: fmt.Sprintf("gateway.session.cookie_keys[%d].block", i), Msg: "(hidden) is not allowed: want 16, 24 or 32 random bytes, base64 encoded (openssl rand -base64 32)"}
		}
		out = append(out, keyPair{h, b})
	}
	return out, nil
}

func randomBytes(n int) func() ([]byte, error) {
	return func() ([]byte, error) {
		b := make([]byte, n)
		_, err := rand.Read(b)
		return b, err
	}
}

// runtime holds what serve builds: shared by the issuer, the gateway and
// the demo API, closed in reverse order.
type runtime struct {
	cfg      *Config
	log      *slog.Logger
	db       *bbolt.DB
	redis    goredis.UniversalClient
	registry *prometheus.Registry
	istore   storage.Store
	denySub  denylist.Subscriber // the Redis store's pub/sub; nil on bbolt
	// iss is the embedded issuer (nil when disabled): a reload registers
	// the frontends' clients there (SetManagedClients).
	iss     *issuer.Server
	closers []func() error
}

func (rt *runtime) close() {
	for i := len(rt.closers) - 1; i >= 0; i-- {
		if err := rt.closers[i](); err != nil {
			rt.log.Warn("closing", "err", err)
		}
	}
}

// openState opens the data directory's bbolt file and, when configured,
// the Redis client, and the issuer's state store.
func openState(ctx context.Context, cfg *Config, log *slog.Logger) (*runtime, error) {
	rt := &runtime{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	rt.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir %q: %w (set data_dir or --data-dir to a writable directory)", cfg.DataDir, err)
	}
	path := filepath.Join(cfg.DataDir, dataFile)
	db, err := datafile.Open(path, 3*time.Second)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w (is another bffgate running on this data directory?)", path, err)
	}
	rt.db = db
	rt.closers = append(rt.closers, db.Close)

	if cfg.Redis.URL != "" || len(cfg.Redis.ClusterAddrs) > 0 || len(cfg.Redis.SentinelAddrs) > 0 {
		client, err := newRedis(cfg.Redis)
		if err != nil {
			rt.close()
			return nil, err
		}
		rt.redis = client
		rt.closers = append(rt.closers, client.Close)
	}

	switch cfg.Issuer.Store {
	case "redis":
		if rt.redis == nil {
			rt.close()
			return nil, errors.New("config: issuer.store: \"redis\" needs redis.url")
		}
		st, err := issuerredis.New(rt.redis, issuerredis.Config{Prefix: cfg.Redis.Prefix + "issuer:", Logger: log, Registerer: rt.registry})
		if err != nil {
			rt.close()
			return nil, err
		}
		rt.istore = st
		rt.denySub = st // revocations pushed to every instance at once
	default:
		st, err := issuerbolt.New(db, issuerbolt.DefaultConfig())
		if err != nil {
			rt.close()
			return nil, err
		}
		rt.istore = st
	}
	// Generated secrets lost with the store (a Redis restarted empty) are
	// put back by the instances that hold them (cmdServe runs the Keeper).
	settle := time.Duration(0)
	if cfg.Issuer.Store == "redis" {
		settle = storage.SettleTime // instances sharing the store may restore its secrets
	}
	rt.istore = storage.NewKeeper(rt.istore, log.With("component", "issuer", "subsystem", "secrets"), settle)
	return rt, nil
}

// newRedis builds a universal client: a single server, Sentinel or Cluster,
// every call bounded by redis.dial_timeout, read_timeout and write_timeout
// (redisBudget).
func newRedis(cfg Redis) (goredis.UniversalClient, error) {
	base := &goredis.Options{}
	if cfg.URL != "" {
		var err error
		if base, err = goredis.ParseURL(cfg.URL); err != nil {
			// Not err itself: a *url.Error repeats the whole URL, password
			// included.
			return nil, fmt.Errorf("config: redis.url: %s is not a Redis URL: %s", redactURL(cfg.URL), redisURLWant)
		}
	}
	t := redisTimeoutsOf(cfg)
	var client goredis.UniversalClient
	switch {
	case len(cfg.ClusterAddrs) > 0:
		// base.DB is 0 here: validate refuses another database with
		// cluster_addrs, which the cluster client would ignore.
		o := &goredis.ClusterOptions{Addrs: cfg.ClusterAddrs,
			Username: base.Username, Password: base.Password, TLSConfig: base.TLSConfig}
		o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolTimeout, o.ContextTimeoutEnabled = t.dial, t.read, t.write, t.pool(), true
		client = goredis.NewClusterClient(o)
	case len(cfg.SentinelAddrs) > 0:
		client = goredis.NewFailoverClient(failoverOptions(cfg, base))
	default:
		base.DialTimeout, base.ReadTimeout, base.WriteTimeout, base.PoolTimeout, base.ContextTimeoutEnabled = t.dial, t.read, t.write, t.pool(), true
		base.PipelineReadBufferSize, base.PipelineWriteBufferSize = pipelineBufferSize, pipelineBufferSize
		client = goredis.NewClient(base)
	}
	client.AddHook(redisBudget{d: t.budget()})
	return client, nil
}

// pipelineBufferSize sizes the read and write buffers of the connections
// go-redis keeps for pipelines and transactions (a standalone or Sentinel
// client has a pool of them besides the main one), as the main pool's
// are: bffgate's transactions carry a record of a few KB (a session's
// Update, an issuer grant), and go-redis's default for that pool, 128 KiB
// each way, cost 256 KiB per connection, kept for the process's life
// once a burst of concurrent transactions (several requests sliding one
// session) had opened them: the Redis store's RSS rose about 3 MB a
// minute into the load benchmark's soak and stayed.
const pipelineBufferSize = 32 << 10

// failoverOptions are the Sentinel client's options: the sentinels, their
// own credentials (redis.sentinel_username, redis.sentinel_password), and
// the master's credentials, TLS and database from redis.url (base), with
// the timeouts of the redis section.
func failoverOptions(cfg Redis, base *goredis.Options) *goredis.FailoverOptions {
	t := redisTimeoutsOf(cfg)
	return &goredis.FailoverOptions{
		MasterName:            cfg.MasterName,
		SentinelAddrs:         cfg.SentinelAddrs,
		SentinelUsername:      cfg.SentinelUsername,
		SentinelPassword:      cfg.SentinelPassword,
		Username:              base.Username,
		Password:              base.Password,
		TLSConfig:             base.TLSConfig,
		DB:                    base.DB,
		DialTimeout:           t.dial,
		ReadTimeout:           t.read,
		WriteTimeout:          t.write,
		PoolTimeout:           t.pool(),
		ContextTimeoutEnabled: true,

		PipelineReadBufferSize:  pipelineBufferSize,
		PipelineWriteBufferSize: pipelineBufferSize,
	}
}

// listener is one fiber app on its address.
type listener struct {
	name  string
	app   *fiber.App
	ln    net.Listener
	admin *adminsock.Server // the admin socket instead of an app
}

func cmdServe(args []string, stdout, stderr io.Writer, env []string) error {
	f, err := parseFlags("serve", args, nil)
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	log, logBuf := newBufferedLogger(cfg.Log, stderr)
	defer logBuf.Close() // first in, last out: after the final line
	slog.SetDefault(log)
	ctx, stop := signalContext()
	defer stop()

	rt, err := openState(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer rt.close()

	g, gctx := errgroup.WithContext(ctx)
	if k, ok := rt.istore.(*storage.Keeper); ok {
		g.Go(func() error { k.Run(gctx); return nil })
	}
	var listeners []listener
	serve := func(name, addr string, app *fiber.App) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s: listening on %s: %w (is the port in use? set %s)", name, addr, err, listenKey(name))
		}
		listeners = append(listeners, listener{name: name, app: app, ln: ln})
		g.Go(func() error {
			if err := app.Listener(ln); err != nil && !errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
		return nil
	}
	shutdown := func() {
		// Stop accepting, drain in-flight requests, in reverse start order:
		// the gateway goes first so it stops sending to the others.
		for i := len(listeners) - 1; i >= 0; i-- {
			l := listeners[i]
			if l.admin != nil {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
				if err := l.admin.Close(ctx); err != nil {
					log.Warn("closing the admin socket", "path", l.admin.Path(), "err", err)
				}
				cancel()
				continue
			}
			if err := l.app.ShutdownWithTimeout(cfg.ShutdownTimeout.D()); err != nil {
				log.Warn("shutdown did not drain in time", "listener", l.name, "err", err)
			}
		}
	}

	var clientSecret string
	if *cfg.Issuer.Enabled {
		srv, secret, err := buildIssuer(gctx, rt)
		if err != nil {
			shutdown()
			return err
		}
		clientSecret = secret
		rt.closers = append(rt.closers, srv.Close) // the audit file
		g.Go(func() error { return srv.Run(gctx) })
		if err := serve("issuer", cfg.Issuer.Listen, srv.App()); err != nil {
			shutdown()
			return err
		}
		if err := serveAdmin(g, rt, srv, &listeners); err != nil {
			shutdown()
			return err
		}
	}
	if *cfg.DemoAPI.Enabled {
		app, err := buildDemoAPI(gctx, rt, clientSecret)
		if err != nil {
			shutdown()
			return err
		}
		if err := serve("demo API", cfg.DemoAPI.Listen, app); err != nil {
			shutdown()
			return err
		}
	}
	if *cfg.Gateway.Enabled {
		gs, err := buildGateway(gctx, rt, clientSecret)
		if err != nil {
			shutdown()
			return err
		}
		g.Go(func() error { return gs.Run(gctx) })
		if err := serve("gateway", cfg.Gateway.Listen, gs.host.App()); err != nil {
			shutdown()
			return err
		}
		g.Go(func() error { gs.watchReload(gctx, f, env); return nil })
	}
	printBanner(stdout, cfg)
	for _, w := range startupWarnings(cfg) {
		log.Warn(w)
	}
	log.Info("bffgate started", "version", version, "data_dir", cfg.DataDir,
		"issuer", enabledURL(*cfg.Issuer.Enabled, cfg.Issuer.URL),
		"gateway", enabledURL(*cfg.Gateway.Enabled, cfg.Gateway.PublicURL), "frontends", len(cfg.Gateway.Frontends))

	<-gctx.Done()
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout.D().String())
	shutdown()
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err == nil {
		log.Info("bffgate stopped")
	}
	return err
}

// listenKey says how to move a listener: its key, flag and variable.
func listenKey(name string) string {
	switch name {
	case "issuer":
		return "issuer.listen, --issuer-listen or BFFGATE_ISSUER_LISTEN"
	case "demo API":
		return "demo_api.listen, --demo-api-listen or BFFGATE_DEMO_API_LISTEN"
	default:
		return "gateway.listen, --listen or BFFGATE_GATEWAY_LISTEN"
	}
}

// rotateFlags are keys rotate's own flags.
func rotateFlags(alg *string) func(*flag.FlagSet) {
	return func(fs *flag.FlagSet) {
		fs.StringVar(alg, "alg", "", "the new key's algorithm (default: issuer.tokens.alg)")
	}
}

func enabledURL(on bool, u string) string {
	if !on {
		return "off"
	}
	return u
}

// buildIssuer makes the embedded issuer from the configuration. In the
// zero-config run, and whenever the gateway uses the embedded issuer, it
// registers the gateway's own client, whose secret is generated once and
// kept in the store. It returns that secret for the gateway and demo API.
func buildIssuer(ctx context.Context, rt *runtime) (*issuer.Server, string, error) {
	cfg := rt.cfg
	var secret string
	if cfg.registersGatewayClient() {
		raw, err := rt.istore.Secret(ctx, "issuer/client/"+embeddedClientID, randomBytes(32))
		if err != nil {
			return nil, "", fmt.Errorf("issuer: reading the gateway client's secret: %w", err)
		}
		secret = base64.RawURLEncoding.EncodeToString(raw)
	}
	if err := readFrontendSecrets(ctx, rt, cfg); err != nil {
		return nil, "", err
	}
	icfg := cfg.issuerConfig(secret)
	// The frontends' clients are the issuer's managed clients, which a
	// reload replaces; issuerConfig lists them among the configured ones
	// only for the configuration check.
	managed := cfg.frontendClients()
	icfg.Clients = slices.DeleteFunc(icfg.Clients, func(c issuer.Client) bool {
		return slices.ContainsFunc(managed, func(m issuer.Client) bool { return m.ID == c.ID })
	})
	icfg.ManagedClients = managed
	icfg.Store = rt.istore
	icfg.DenylistSubscriber = rt.denySub
	icfg.Logger = rt.log.With("component", "issuer")
	icfg.Registerer = rt.registry
	icfg.Gatherer = rt.registry
	srv, err := issuer.New(ctx, icfg)
	if err != nil {
		return nil, "", cfg.managedClientError(err)
	}
	rt.iss = srv
	return srv, secret, nil
}

// readFrontendSecrets reads the secret of each frontend's own client at
// the embedded issuer into cfg.frontendSecrets, generated once and kept
// in the store as the gateway's is.
func readFrontendSecrets(ctx context.Context, rt *runtime, cfg *Config) error {
	for _, f := range cfg.Gateway.Frontends {
		if !cfg.registersFrontendClient(f) {
			continue
		}
		raw, err := rt.istore.Secret(ctx, "issuer/client/"+f.Provider.ClientID, randomBytes(32))
		if err != nil {
			return fmt.Errorf("issuer: reading the secret of %s's client: %w", f.Name, err)
		}
		if cfg.frontendSecrets == nil {
			cfg.frontendSecrets = map[string]string{}
		}
		cfg.frontendSecrets[f.Name] = base64.RawURLEncoding.EncodeToString(raw)
	}
	return nil
}

// startupWarnings are what a configuration allows but a user almost never
// means: they go to the log at every start.
func startupWarnings(cfg *Config) []string {
	var w []string
	if *cfg.Issuer.Enabled && len(cfg.Issuer.Users) == 0 && !cfg.zeroConfig {
		// A configuration file turns the demo user off; following the SPA
		// guide with a file and no issuer.users left a stack where every
		// login failed with "Wrong username or password" and nothing said why.
		w = append(w, "the embedded issuer has no user, so nobody can log in: add issuer.users "+
			"(hash a password with `bffgate users hash`), or run without a configuration file for the demo user")
	}
	return append(w, forwardAuthWarnings(cfg)...)
}

// printBanner tells the developer, once, where everything is.
func printBanner(w io.Writer, cfg *Config) {
	var b strings.Builder
	b.WriteString("\nbffgate " + version + " is running\n")
	if *cfg.Gateway.Enabled && len(cfg.Gateway.Frontends) > 0 {
		fmt.Fprintf(&b, "  gateway        %s, %d frontends (reload them with SIGHUP):\n", cfg.Gateway.Listen, len(cfg.Gateway.Frontends))
		for _, f := range cfg.Gateway.Frontends {
			match := "any host"
			if len(f.Match.Hosts) > 0 {
				match = "host " + strings.Join(f.Match.Hosts, ", ")
			}
			if f.Match.PathPrefix != "" {
				match += ", path " + f.Match.PathPrefix
			}
			fmt.Fprintf(&b, "    %-12s %s%s/ (%s; login %s%s/login; provider %s, client %s", f.Name, f.PublicURL, f.Match.PathPrefix, match,
				f.Match.PathPrefix, f.BasePath, f.Provider.IssuerURL, f.Provider.ClientID)
			if len(f.Routes) > 0 {
				b.WriteString("; API routes:")
			}
			for _, r := range f.Routes {
				fmt.Fprintf(&b, " %s -> %s", r.Prefix, r.Upstream)
			}
			b.WriteString(")\n")
		}
	} else if *cfg.Gateway.Enabled {
		fmt.Fprintf(&b, "  open           %s/\n", cfg.Gateway.PublicURL)
		fmt.Fprintf(&b, "  gateway        %s%s/login, /user, /logout (API routes:", cfg.Gateway.PublicURL, cfg.Gateway.BasePath)
		for _, r := range cfg.Gateway.Routes {
			fmt.Fprintf(&b, " %s -> %s", r.Prefix, r.Upstream)
		}
		b.WriteString(")\n")
	}
	if *cfg.Issuer.Enabled {
		fmt.Fprintf(&b, "  issuer         %s/.well-known/openid-configuration\n", cfg.Issuer.URL)
	}
	if *cfg.DemoAPI.Enabled {
		fmt.Fprintf(&b, "  demo API       http://%s/api/whoami\n", cfg.DemoAPI.Listen)
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		abs = cfg.DataDir
	}
	fmt.Fprintf(&b, "  data directory %s\n", abs)
	fmt.Fprintf(&b, "  metrics        /metrics on each listener; health /healthz, /readyz\n")
	if cfg.zeroConfig {
		fmt.Fprintf(&b, "  demo login     user %q, password %q\n", demoUser, demoPassword)
		b.WriteString("\n  WARNING: development mode. The demo user, the generated keys and the generated\n" +
			"  client secret are for local development only. For anything else, write a\n" +
			"  configuration file (see bffgate.example.yaml) and run bffgate --config FILE.\n")
	}
	b.WriteString("\n")
	io.WriteString(w, b.String())
}

func cmdKeysRotate(args []string, stdout, stderr io.Writer, env []string) error {
	var alg string
	f, err := parseFlags("keys rotate", args, rotateFlags(&alg))
	if err != nil {
		return err
	}
	cfg, err := configFor(f, env)
	if err != nil {
		return err
	}
	if alg == "" {
		alg = cfg.Issuer.Tokens.Alg
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signalContext()
	defer stop()
	rt, err := openState(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer rt.close()
	kid, err := keys.Rotate(ctx, rt.istore, alg, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "new active %s key %s; older keys keep verifying until their tokens expire.\nRestart running bffgate instances (or wait for their key reload) to sign with it.\n", alg, kid)
	return nil
}
