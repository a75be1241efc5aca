package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/bff"
	"github.com/bffgate/bffgate/session"
	sessionbolt "github.com/bffgate/bffgate/session/bolt"
	sessionredis "github.com/bffgate/bffgate/session/redis"
)

// gatewayServer is the gateway listener: one bff.Host and the frontends
// it serves, each a gateway on a session store with the work both run
// beside (the gateway's caches, the store's sweeper or listener), which a
// reload (SIGHUP) replaces one by one.
type gatewayServer struct {
	rt     *runtime
	parts  gatewayParts
	host   *bff.Host
	ctx    context.Context // the server's life; each piece runs under a child
	reload *prometheus.CounterVec

	mu        sync.Mutex
	cfg       *Config
	frontends map[string]*runningFrontend
	// stores are the frontends' session stores by frontend name. A
	// frontend rebuilt with the same store kind keeps its store: one
	// store per namespace (bbolt's record cache sees only its own
	// writes, so two stores on one namespace could serve a stale
	// session, rotated refresh token included).
	stores map[string]*runningStore
	wg     sync.WaitGroup
}

// worker is background work that can be stopped and waited for.
type worker struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the work has returned
}

// retire stops the work and waits for it to return.
func (w *worker) retire() {
	w.cancel()
	<-w.done
}

// runningFrontend is one frontend in service.
type runningFrontend struct {
	worker
	conf Frontend // as configured (gateway.frontends[i]); zero for the classic one
	gw   *bff.Gateway
	// metrics are the gateway's collectors (nil for the classic one),
	// unregistered when the frontend is removed.
	metrics *stagedRegisterer
}

// runningStore is a frontend's session store in service.
type runningStore struct {
	worker
	kind  string
	store session.Store
	run   func(context.Context) error
	// metrics are the store's collectors (nil for the classic one),
	// registered by commit, unregistered when the frontend is removed.
	metrics *stagedRegisterer
}

// buildGateway makes the gateway listener with its frontends: the one of
// the top-level keys, or those of gateway.frontends.
func buildGateway(ctx context.Context, rt *runtime, embeddedSecret string) (*gatewayServer, error) {
	parts, err := loadGatewayParts(ctx, rt)
	if err != nil {
		return nil, err
	}
	host, err := bff.NewHost(bff.HostConfig{Logger: rt.log.With("component", "gateway"), Registerer: rt.registry,
		Gatherer: rt.registry, AccessLog: rt.cfg.Log.Access, BodyLimit: bff.DefaultConfig().BodyLimit})
	if err != nil {
		return nil, err
	}
	s := &gatewayServer{rt: rt, parts: parts, host: host, ctx: ctx, cfg: rt.cfg,
		frontends: map[string]*runningFrontend{}, stores: map[string]*runningStore{}}
	s.reload = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_config_reloads_total",
		Help: "Configuration reloads (SIGHUP) of the gateway's frontends, by result (ok, error).",
	}, []string{"result"})
	if err := rt.registry.Register(s.reload); err != nil {
		return nil, err
	}
	builds := []frontendBuild{}
	confs := []Frontend{}
	if len(rt.cfg.Gateway.Frontends) == 0 {
		builds, confs = append(builds, classicBuild(rt, embeddedSecret)), append(confs, Frontend{})
	} else {
		for i, f := range rt.cfg.Gateway.Frontends {
			builds, confs = append(builds, frontendBuildOf(rt.cfg, i)), append(confs, f)
		}
	}
	var gws []*bff.Gateway
	for i, fb := range builds {
		st, err := s.openStore(fb)
		if err == nil {
			err = st.metrics.commit(frontendRegistry(rt, fb.name))
		}
		if err != nil {
			s.stop()
			return nil, err
		}
		s.startStore(fb.name, st)
		var reg *stagedRegisterer
		if fb.name != "" {
			reg = &stagedRegisterer{}
			fb.reg = reg
		}
		g, run, err := buildFrontend(ctx, rt, parts, fb, st.store)
		if err == nil {
			err = reg.commit(frontendRegistry(rt, fb.name))
		}
		if err != nil {
			s.stop()
			return nil, err
		}
		s.start(fb.name, confs[i], g, run, reg)
		gws = append(gws, g)
	}
	if err := host.Set(gws); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// openStore opens a frontend's session store; nothing of it runs yet, and
// a named frontend's store metrics wait for commit.
func (s *gatewayServer) openStore(fb frontendBuild) (*runningStore, error) {
	var reg *stagedRegisterer
	if fb.name != "" {
		reg = &stagedRegisterer{}
		fb.reg = reg
	}
	st, run, err := sessionStore(s.ctx, s.rt, s.parts.pairs, fb.store, fb.name, fb.registry(s.rt))
	if err != nil {
		if fb.name != "" {
			err = fmt.Errorf("frontend %s: %w", fb.name, err)
		}
		return nil, err
	}
	return &runningStore{kind: fb.store, store: st, run: run, metrics: reg}, nil
}

// startStore runs a store's background work as frontend name's.
func (s *gatewayServer) startStore(name string, st *runningStore) {
	st.worker = s.goWork("session store", name, st.run)
	s.stores[name] = st
}

// start runs a frontend's background work until it is replaced or the
// server stops.
func (s *gatewayServer) start(name string, conf Frontend, g *bff.Gateway, run func(context.Context) error, metrics *stagedRegisterer) {
	s.frontends[name] = &runningFrontend{worker: s.goWork("gateway", name, run), conf: conf, gw: g, metrics: metrics}
}

func (s *gatewayServer) goWork(what, name string, run func(context.Context) error) worker {
	ctx, cancel := context.WithCancel(s.ctx)
	w := worker{cancel: cancel, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(w.done)
		if err := run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			s.rt.log.Error(what+" background work failed", "frontend", name, "err", err)
		}
	}()
	return w
}

// stop ends every frontend's and store's background work and waits for
// it.
func (s *gatewayServer) stop() {
	s.mu.Lock()
	for _, f := range s.frontends {
		f.cancel()
	}
	for _, st := range s.stores {
		st.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Run waits until ctx ends, then stops the frontends' work.
func (s *gatewayServer) Run(ctx context.Context) error {
	<-ctx.Done()
	s.stop()
	return nil
}

// Reload applies gateway.frontends of next, a configuration loaded (and
// validated) from the same file: changed and added frontends get new
// gateways (discovery of their provider included) on their store (the
// running one when its kind is unchanged), unchanged ones keep theirs
// and their sessions, removed ones answer 401 frontend_removed until a
// restart and their server-side sessions are deleted. Other changed keys
// need a restart: they are named in the returned warnings and not
// applied. On an error nothing changes.
func (s *gatewayServer) Reload(next *Config) (warnings []string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cfg.Gateway.Frontends) == 0 || len(next.Gateway.Frontends) == 0 {
		a, b := comparable(s.cfg), comparable(next)
		if reflect.DeepEqual(a, b) && len(s.cfg.Gateway.Frontends) == len(next.Gateway.Frontends) {
			return nil, nil
		}
		// With gateway.frontends set or unset, keys such as
		// gateway.provider are filled differently: name it alone.
		keys := []string{"gateway.frontends"}
		if len(s.cfg.Gateway.Frontends) == len(next.Gateway.Frontends) {
			keys = changedKeys(reflect.ValueOf(a), reflect.ValueOf(b), "")
		}
		if len(keys) == 0 {
			keys = []string{"the configuration"}
		}
		return []string{strings.Join(keys, ", ") + " changed, but only gateway.frontends is applied by a reload, and not to an instance started without it: restart bffgate to apply it"}, nil
	}
	if a, b := comparable(s.cfg), comparable(next); !reflect.DeepEqual(a, b) {
		keys := changedKeys(reflect.ValueOf(a), reflect.ValueOf(b), "")
		if len(keys) == 0 {
			keys = []string{"keys other than gateway.frontends"}
		}
		warnings = append(warnings, strings.Join(keys, ", ")+" changed: they need a restart and are not applied (a reload applies gateway.frontends only)")
	}
	// The new frontends over the running configuration's other keys (what
	// they inherit included), checked again on those.
	merged := *s.cfg
	merged.Gateway.Frontends = cloneFrontends(next.rawFrontends)
	merged.rawFrontends = next.rawFrontends
	merged.fillFrontends()
	if errs := merged.validateFrontends(); len(errs) > 0 {
		return warnings, next.src.locateAll(errors.Join(errs...))
	}
	next = &merged
	// The frontends' own clients at the embedded issuer: secrets of new
	// ones generated (or read: a frontend added back) before building,
	// the set registered before the new table is served (removed
	// frontends' clients go with it), and put back if serving fails.
	next.frontendSecrets = maps.Clone(s.cfg.frontendSecrets)
	if s.rt.iss != nil {
		if err := readFrontendSecrets(s.ctx, s.rt, next); err != nil {
			return warnings, err
		}
	}
	type built struct {
		name  string
		conf  Frontend
		gw    *bff.Gateway
		run   func(context.Context) error
		store *runningStore // a new store (its kind changed, or a new frontend); nil: the running one
		// metrics holds what the gateway and its new store registered
		// until they are served: until then the running frontend of that
		// name keeps its metrics (a reload refused later changes nothing).
		metrics *stagedRegisterer
	}
	// Built but not yet served, a new gateway or store runs nothing: on an
	// error it is dropped as it is.
	var fresh []built
	var gws []*bff.Gateway
	// A kept gateway strips the other frontends' cookies it was told of:
	// a new cookie name rebuilds them all.
	sameCookies := slices.Equal(s.cfg.frontendCookieNames(), next.frontendCookieNames())
	for i, f := range next.Gateway.Frontends {
		if old, ok := s.frontends[f.Name]; ok && sameCookies && reflect.DeepEqual(old.conf, f) {
			gws = append(gws, old.gw)
			continue
		}
		fb := frontendBuildOf(next, i)
		b := built{name: f.Name, conf: f, metrics: &stagedRegisterer{}}
		fb.reg = b.metrics
		store := s.stores[f.Name]
		if store == nil || store.kind != fb.store {
			if b.store, err = s.openStore(fb); err != nil {
				return warnings, err
			}
			store = b.store
		}
		if b.gw, b.run, err = buildFrontend(s.ctx, s.rt, s.parts, fb, store.store); err != nil {
			return warnings, err
		}
		fresh = append(fresh, b)
		gws = append(gws, b.gw)
	}
	if s.rt.iss != nil {
		if err := s.rt.iss.SetManagedClients(next.frontendClients()); err != nil {
			return warnings, next.managedClientError(err)
		}
	}
	if err := s.host.Set(gws); err != nil {
		if s.rt.iss != nil {
			// The running frontends' clients, as they were: accepted before.
			if perr := s.rt.iss.SetManagedClients(s.cfg.frontendClients()); perr != nil {
				s.rt.log.Error("restoring the frontends' clients at the embedded issuer failed", "err", perr)
			}
		}
		return warnings, err
	}
	// Served now: retire the replaced and removed ones, start the new.
	keep := map[string]bool{}
	for _, f := range next.Gateway.Frontends {
		keep[f.Name] = true
	}
	for _, b := range fresh {
		if err := b.metrics.commit(frontendRegistry(s.rt, b.name)); err != nil {
			s.rt.log.Error("registering the metrics of a reloaded frontend failed; it serves without them", "frontend", b.name, "err", err)
		}
		if old, ok := s.frontends[b.name]; ok {
			old.retire()
			delete(s.frontends, b.name)
		}
		if b.store != nil {
			reg := frontendRegistry(s.rt, b.name)
			if old, ok := s.stores[b.name]; ok {
				old.retire()
				old.metrics.unregister(reg) // another kind's series
			}
			if err := b.store.metrics.commit(reg); err != nil {
				s.rt.log.Error("registering the metrics of a reloaded frontend's store failed; it serves without them", "frontend", b.name, "err", err)
			}
			s.startStore(b.name, b.store)
		}
		s.start(b.name, b.conf, b.gw, b.run, b.metrics)
	}
	var removed []Frontend
	for name, f := range s.frontends {
		if !keep[name] {
			f.retire()
			// Its series go: a removed frontend's would stay on /metrics,
			// frozen, until a restart.
			reg := frontendRegistry(s.rt, name)
			f.metrics.unregister(reg)
			if st, ok := s.stores[name]; ok {
				st.retire()
				st.metrics.unregister(reg)
				delete(s.stores, name)
			}
			removed = append(removed, f.conf)
			delete(s.frontends, name)
		}
	}
	s.cfg = next
	// Served no more, and their work stopped: their stored sessions go
	// now, before any later reload could add a frontend of that name
	// again (whose sessions a late purge would take).
	for _, f := range removed {
		s.purge(f)
	}
	return warnings, nil
}

// purge deletes a removed frontend's server-side sessions (its bbolt
// buckets or Redis keys); cookie sessions have none (the frontend's 401
// ends them). Its ended records stay: they keep the cookies its users
// logged out of refused if a frontend of that name is added again. It
// runs in the reload's goroutine, beside the requests being served.
func (s *gatewayServer) purge(f Frontend) {
	name, kind := f.Name, f.Session.Store
	log := s.rt.log.With("component", "gateway", "frontend", name)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var n int
	var err error
	// Its sessions (bbolt, redis); the ended records of cookie sessions
	// (in Redis when there is one, else in the data file) stay, whatever
	// its store is now: it may have run on cookies before.
	if kind == "redis" || kind == "cookie" && s.rt.redis != nil {
		n, err = sessionredis.Purge(ctx, s.rt.redis, redisSessionPrefix(s.rt.cfg, name), redisEndedPrefix(s.rt.cfg, name))
	} else {
		n, err = sessionbolt.Purge(s.rt.db, name)
	}
	if kind == "cookie" {
		n = 0 // records, not sessions
	}
	if err != nil {
		log.Error("deleting the sessions of a removed frontend failed; they stay unusable (no frontend accepts them)", "err", err)
		return
	}
	log.Info("frontend removed: its sessions are deleted", "sessions", n)
}

// changedKeys lists the YAML keys (under path) whose values differ
// between a and b, two values of one configuration type: the leaves of
// the structs decode walks key by key, a list or map as a whole.
func changedKeys(a, b reflect.Value, path string) []string {
	t := a.Type()
	if !walked(t) {
		if reflect.DeepEqual(a.Interface(), b.Interface()) {
			return nil
		}
		return []string{path}
	}
	var out []string
	for _, f := range keysOf(t) {
		key := f.name
		if path != "" {
			key = path + "." + f.name
		}
		out = append(out, changedKeys(a.FieldByIndex(f.index), b.FieldByIndex(f.index), key)...)
	}
	return out
}

// comparable is cfg without what a reload applies (gateway.frontends) and
// without what loading fills per run, for telling whether anything else
// changed.
func comparable(cfg *Config) Config {
	c := *cfg
	c.Gateway.Frontends = nil
	c.rawFrontends = nil
	c.src = nil
	c.frontendSecrets = nil
	return c
}

// watchReload reloads the configuration on every SIGHUP until ctx ends:
// the file and the environment again, through the flags (configFor), then
// Reload. An invalid file keeps the running configuration; its errors are
// logged with their YAML keys.
func (s *gatewayServer) watchReload(ctx context.Context, f *commonFlags, env []string) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := s.rt.log.With("component", "gateway")
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading the configuration")
		next, err := configFor(f, env)
		if err == nil {
			var warnings []string
			warnings, err = s.Reload(next)
			for _, w := range warnings {
				log.Warn("configuration reload: " + w)
			}
		}
		if err != nil {
			s.reload.WithLabelValues("error").Inc()
			log.Error("configuration reload refused; the running configuration stays", "err", err.Error())
			continue
		}
		s.reload.WithLabelValues("ok").Inc()
		log.Info("configuration reloaded", "frontends", s.frontendNames(), "removed", s.host.Removed())
	}
}

// frontendNames are the frontends being served.
func (s *gatewayServer) frontendNames() []string {
	var out []string
	for _, g := range s.host.Frontends() {
		out = append(out, g.Name())
	}
	return out
}

// stagedRegisterer keeps the collectors registered with it until commit
// registers them with the real registerer (frontendRegisterer, which
// replaces the running frontend's): a reload builds its frontends before
// it knows it will serve them.
type stagedRegisterer struct {
	mu sync.Mutex
	cs []prometheus.Collector
}

func (r *stagedRegisterer) Register(c prometheus.Collector) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cs = append(r.cs, c)
	return nil
}

func (r *stagedRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		_ = r.Register(c)
	}
}

func (r *stagedRegisterer) Unregister(c prometheus.Collector) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !reflect.TypeOf(c).Comparable() {
		return false
	}
	for i, o := range r.cs {
		if reflect.TypeOf(o) == reflect.TypeOf(c) && o == c {
			r.cs = slices.Delete(r.cs, i, i+1)
			return true
		}
	}
	return false
}

// commit registers the staged collectors with reg (none for a nil r).
func (r *stagedRegisterer) commit(reg prometheus.Registerer) error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	for _, c := range r.cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unregister takes the collectors committed to reg off it again.
func (r *stagedRegisterer) unregister(reg prometheus.Registerer) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cs {
		reg.Unregister(c)
	}
}
