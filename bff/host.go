package bff

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/gofiber/fiber/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/bffgate/bffgate/internal/edge"
	"github.com/bffgate/bffgate/internal/obs"
)

// HostConfig configures a Host: what belongs to the listener rather than
// to one frontend.
type HostConfig struct {
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// Registerer receives the request metrics (nil: none); Gatherer is
	// what /metrics serves (nil: no /metrics).
	Registerer prometheus.Registerer
	Gatherer   prometheus.Gatherer
	// AccessLog writes one line per request.
	AccessLog bool
	// BodyLimit is fiber's BodyLimit under StreamRequestBody (see
	// Config.BodyLimit); default 10 MiB.
	BodyLimit int
}

// Host is the gateway's listener: one fiber app (internal/edge, with
// /healthz, /readyz and /metrics) in front of one or more frontends, each
// a Gateway with its own provider, client, cookies, session store and
// routes. Every request goes to exactly one frontend, chosen by its Host
// header and path (Select), or is answered 404 no_frontend.
//
// The frontend table is immutable and swapped whole by Set, so a reload
// never shows a request half of the old table and half of the new.
type Host struct {
	app   *fiber.App
	obs   *obs.Obs
	log   *slog.Logger
	table atomic.Pointer[frontendTable]
}

// NewHost builds the listener's app with no frontend: until Set, every
// request is answered 404 no_frontend and /readyz is not ready.
func NewHost(cfg HostConfig) (*Host, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.BodyLimit == 0 {
		cfg.BodyLimit = DefaultConfig().BodyLimit
	}
	if cfg.BodyLimit < 0 {
		return nil, ferr("body_limit", "must not be negative")
	}
	o, err := obs.New(obs.Config{Component: "gateway", Logger: cfg.Logger, Registerer: cfg.Registerer, Gatherer: cfg.Gatherer, AccessLog: cfg.AccessLog})
	if err != nil {
		return nil, fmt.Errorf("bff: register request metrics: %w", err)
	}
	h := &Host{obs: o, log: cfg.Logger}
	h.table.Store(&frontendTable{})
	// internal/edge, which every listener shares: framing checks, parse
	// errors answered by kind, copied request values, streamed bodies
	// read to their end or the connection closed.
	app, err := edge.New(edge.Config{Obs: o, Fiber: fiber.Config{
		ErrorHandler:          errorHandler,
		DisableStartupMessage: true,
		// Chunked session cookies can reach maxChunks*chunkSize bytes.
		ReadBufferSize:    maxChunks*chunkSize + 16<<10,
		StreamRequestBody: true,
		BodyLimit:         cfg.BodyLimit,
	}})
	if err != nil {
		return nil, fmt.Errorf("bff: %w", err)
	}
	o.Mount(app, obs.Check{Name: "gateway", Fn: h.ready})
	app.Use(h.handle)
	h.app = app
	return h, nil
}

// App returns the listener's fiber app.
func (h *Host) App() *fiber.App { return h.app }

// Frontends returns the frontends being served, in the order Set had them.
func (h *Host) Frontends() []*Gateway { return slices.Clone(h.table.Load().all) }

// Set validates the frontends (see CheckFrontends) and makes them the ones
// served, in one atomic swap: requests already running finish with the
// frontend they were given. Frontends served before and missing from gws
// are removed: until the Host is built again, a request that a removed
// frontend matches more closely than any of gws is answered 401
// frontend_removed (deleting its stored sessions is the caller's:
// session/bolt.Purge, session/redis.Purge). On an error nothing changes.
func (h *Host) Set(gws []*Gateway) error {
	if len(gws) == 0 {
		return errors.New("bff: Host.Set: no frontend")
	}
	specs := make([]FrontendSpec, len(gws))
	for i, g := range gws {
		if g == nil {
			return fmt.Errorf("bff: Host.Set: frontend %d is nil", i)
		}
		specs[i] = g.spec()
	}
	if err := CheckFrontends(specs); err != nil {
		return err
	}
	old := h.table.Load()
	t := &frontendTable{all: slices.Clone(gws)}
	names := make([]string, 0, len(gws))
	for _, g := range gws {
		t.entries = append(t.entries, matchOf(g.spec(), g))
		names = append(names, g.describe())
	}
	t.names = strings.Join(names, "; ")
	// Removed earlier, or now: remembered unless a frontend of that name
	// is back.
	for _, e := range old.removed {
		if !slices.ContainsFunc(gws, func(g *Gateway) bool { return g.cfg.Name == e.name }) {
			t.removed = append(t.removed, e)
		}
	}
	for _, e := range old.entries {
		if !slices.ContainsFunc(gws, func(g *Gateway) bool { return g.cfg.Name == e.name }) {
			e.g = nil // the table must not keep the old gateway alive
			t.removed = append(t.removed, e)
		}
	}
	sortEntries(t.entries)
	sortEntries(t.removed)
	for _, g := range gws {
		var peers []*Gateway
		for _, o := range gws {
			if o.sameClient(g) {
				peers = append(peers, o)
			}
		}
		g.peers.Store(&peers)
	}
	h.table.Store(t)
	return nil
}

// Removed returns the names of the frontends Set has removed since the
// Host was built (and not added back).
func (h *Host) Removed() []string {
	var out []string
	for _, e := range h.table.Load().removed {
		out = append(out, e.name)
	}
	return out
}

// ready is /readyz: ready when every frontend is.
func (h *Host) ready(ctx context.Context) error {
	t := h.table.Load()
	if len(t.all) == 0 {
		return errors.New("no frontend configured")
	}
	var errs []error
	for _, g := range t.all {
		if err := g.Ready(ctx); err != nil {
			if g.cfg.Name != "" {
				err = fmt.Errorf("frontend %s: %w", g.cfg.Name, err)
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// handle selects the request's frontend and lets it answer.
func (h *Host) handle(c *fiber.Ctx) error {
	t := h.table.Load()
	host := hostOnly(c.Request().Host())
	path := c.Path()
	// RFC 9728 §3.1: the metadata of the resource /admin/mcp is at
	// /.well-known/oauth-protected-resource/admin/mcp; it belongs to the
	// frontend that serves /admin/mcp.
	sel := path
	if rest, ok := strings.CutPrefix(path, prmPath); ok && (rest == "" || rest[0] == '/') {
		sel = rest
		if sel == "" {
			sel = "/"
		}
	}
	e := selectEntry(t.entries, host, sel)
	// A removed frontend that matches more closely than any served one
	// still owns its addresses (until a restart): its users learn that
	// their sessions ended, rather than meeting the fallback's SPA.
	if r := selectEntry(t.removed, host, sel); r != nil && (e == nil || moreSpecific(r, e)) {
		obs.SetRoute(c, "frontend_removed")
		return writeError(c, newError(fiber.StatusUnauthorized, "frontend_removed",
			"the frontend "+r.name+" that served this address has been removed from the configuration; its sessions have ended"))
	}
	if e != nil {
		if e.g.cfg.Name != "" {
			obs.SetFrontend(c, e.g.cfg.Name)
		}
		return e.g.serve(c)
	}
	obs.SetRoute(c, "no_frontend")
	return writeError(c, newError(fiber.StatusNotFound, "no_frontend",
		"no frontend serves host "+safeText(string(host))+" path "+safeText(path)+"; the frontends are "+t.names))
}

// hostOnly is the Host header's host without its port and without the
// trailing dot of a fully qualified name (admin.example.com. is
// admin.example.com, as DNS and nginx's server_name have it), IPv6
// brackets kept.
func hostOnly(h []byte) []byte {
	h = hostNoPort(h)
	if n := len(h); n > 1 && h[n-1] == '.' {
		return h[:n-1]
	}
	return h
}

func hostNoPort(h []byte) []byte {
	if i := len(h) - 1; i >= 0 {
		for j := i; j >= 0; j-- {
			switch h[j] {
			case ':':
				return h[:j]
			case ']':
				return h
			}
			if h[j] < '0' || h[j] > '9' {
				return h
			}
		}
	}
	return h
}

// frontendTable is what Set built: the frontends by match, the removed
// ones, and the text a no_frontend error lists.
type frontendTable struct {
	entries []hostEntry
	removed []hostEntry
	all     []*Gateway
	names   string
}

// hostEntry is one frontend's match.
type hostEntry struct {
	g      *Gateway
	name   string
	hosts  []string // lower case; none: any host
	prefix string   // "" or /x (no trailing slash)
	index  int      // CheckFrontends: the position in its list
}

func matchOf(s FrontendSpec, g *Gateway) hostEntry {
	e := hostEntry{g: g, name: s.Name, prefix: strings.TrimSuffix(s.PathPrefix, "/")}
	for _, h := range s.Hosts {
		e.hosts = append(e.hosts, normHost(h))
	}
	return e
}

// normHost is a configured host name as selection compares it: lower
// case, without the trailing dot of a fully qualified name (hostOnly).
func normHost(h string) string {
	if len(h) > 1 {
		h = strings.TrimSuffix(h, ".")
	}
	return strings.ToLower(h)
}

// sortEntries orders entries so that the first match is the right one:
// the longest prefix first, and for one prefix a host-specific frontend
// before an any-host one.
func sortEntries(es []hostEntry) {
	slices.SortStableFunc(es, func(a, b hostEntry) int {
		if len(a.prefix) != len(b.prefix) {
			return len(b.prefix) - len(a.prefix)
		}
		return boolInt(len(a.hosts) == 0) - boolInt(len(b.hosts) == 0)
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// moreSpecific reports whether a matches more closely than b: a longer
// prefix, or the same prefix for named hosts against any host.
func moreSpecific(a, b *hostEntry) bool {
	if len(a.prefix) != len(b.prefix) {
		return len(a.prefix) > len(b.prefix)
	}
	return len(a.hosts) > 0 && len(b.hosts) == 0
}

func (t *frontendTable) selectGateway(host []byte, path string) *Gateway {
	if e := selectEntry(t.entries, host, path); e != nil {
		return e.g
	}
	return nil
}

// selectEntry returns the first entry (in sortEntries order) whose hosts
// hold host and whose prefix holds path on a segment boundary (/admin
// holds /admin and /admin/x, not /administrator). Both compare without
// case, as the gateway's routes do. It allocates nothing.
func selectEntry(es []hostEntry, host []byte, path string) *hostEntry {
	for i := range es {
		e := &es[i]
		if !underPrefix(path, e.prefix) {
			continue
		}
		if len(e.hosts) == 0 {
			return e
		}
		for _, h := range e.hosts {
			if len(h) == len(host) && equalFoldBytes(host, h) {
				return e
			}
		}
	}
	return nil
}

// underPrefix reports whether path is prefix or lies below it; every path
// lies below "".
func underPrefix(path, prefix string) bool {
	if len(path) < len(prefix) || !strings.EqualFold(path[:len(prefix)], prefix) {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '/' || prefix == ""
}

func equalFoldBytes(b []byte, s string) bool {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// FrontendSpec is what CheckFrontends needs of one frontend, so that a
// configuration loader can check a file without building gateways.
type FrontendSpec struct {
	// Name is the frontend's name ("" only for a single classic
	// frontend). Index is its position in the configuration's list.
	Name  string
	Index int
	// Hosts and PathPrefix are its match; none: any host, every path.
	Hosts      []string
	PathPrefix string
	// BasePath is where its gateway endpoints start, PathPrefix included
	// (/admin/bff).
	BasePath string
	// CookieName is its session cookie's name, after defaults.
	CookieName string
	// Routes are its API route prefixes (absolute paths).
	Routes []string
	// PublicHost is the host of its public URL (no port); its callback
	// there must reach it. Empty: not checked.
	PublicHost string
}

// FrontendError is a problem between frontends: it names each by its
// place in the list and its name (frontends[1] (admin)).
type FrontendError struct {
	// Path is the key at fault under the first frontend, such as
	// frontends[1].match or frontends[0].session.cookie_name.
	Path string
	Msg  string
}

func (e *FrontendError) Error() string   { return "bff: " + e.Path + ": " + e.Msg }
func (e *FrontendError) Field() string   { return e.Path }
func (e *FrontendError) Problem() string { return e.Msg }

// PublicHost is FrontendSpec.PublicHost of a public URL: its host without
// port, an IPv6 address in brackets as a Host header has it.
func PublicHost(u *url.URL) string {
	h := u.Hostname()
	if strings.Contains(h, ":") {
		h = "[" + h + "]"
	}
	return h
}

func (s FrontendSpec) ref() string {
	if s.Name == "" {
		return fmt.Sprintf("frontends[%d]", s.Index)
	}
	return fmt.Sprintf("frontends[%d] (%s)", s.Index, s.Name)
}

func (s FrontendSpec) hostText() string {
	if len(s.Hosts) == 0 {
		return "any host"
	}
	return "host " + strings.Join(s.Hosts, ", ")
}

// CheckFrontends checks that the frontends can be told apart and do not
// reach into each other: unique names, at most one fallback (no hosts, no
// prefix), no two with the same prefix on a shared host, no prefix that
// takes another frontend's gateway endpoints or API routes (those under
// it on a host both serve), no shared cookie name, and each one's routes
// under its own prefix. It returns every problem, each a *FrontendError
// naming both frontends.
func CheckFrontends(fs []FrontendSpec) error {
	var errs []error
	bad := func(s FrontendSpec, key, format string, args ...any) {
		p := fmt.Sprintf("frontends[%d]", s.Index)
		if key != "" {
			p += "." + key
		}
		errs = append(errs, &FrontendError{Path: p, Msg: fmt.Sprintf(format, args...)})
	}
	fallback := -1
	for i, a := range fs {
		pa := strings.ToLower(strings.TrimSuffix(a.PathPrefix, "/"))
		if len(fs) > 1 && a.Name == "" {
			bad(a, "name", "is required when there are several frontends")
		}
		if len(a.Hosts) == 0 && pa == "" {
			if fallback >= 0 {
				bad(a, "match", "%s and %s both match every host and path (no hosts, no path_prefix): at most one frontend may be the fallback", a.ref(), fs[fallback].ref())
			} else {
				fallback = i
			}
		}
		for _, r := range a.Routes {
			if !underPrefix(strings.ToLower(r), pa) {
				bad(a, "routes", "route %s of %s lies outside its path_prefix %s: another frontend would receive its calls", r, a.ref(), a.PathPrefix)
			}
		}
		for j := 0; j < i; j++ {
			b := fs[j]
			pb := strings.ToLower(strings.TrimSuffix(b.PathPrefix, "/"))
			if a.Name != "" && strings.EqualFold(a.Name, b.Name) {
				bad(a, "name", "%q is also the name of %s", a.Name, b.ref())
			}
			if a.CookieName != "" && a.CookieName == b.CookieName {
				bad(a, "session.cookie_name", "%s and %s both use the session cookie %s: each frontend needs its own", a.ref(), b.ref(), a.CookieName)
			}
			shared, both := sharedHosts(a, b)
			if !shared {
				continue
			}
			if pa == pb && both && !(len(a.Hosts) == 0 && pa == "" && len(b.Hosts) == 0) {
				bad(a, "match", "%s and %s both match %s with path prefix %q: which one serves a request would be ambiguous", a.ref(), b.ref(), sharedText(a, b), a.PathPrefix)
			}
			// One takes the other's endpoints or routes when its prefix is
			// longer and holds them, on a host both serve.
			for _, pair := range [][2]FrontendSpec{{a, b}, {b, a}} {
				x, y := pair[0], pair[1]
				px := strings.ToLower(strings.TrimSuffix(x.PathPrefix, "/"))
				py := strings.ToLower(strings.TrimSuffix(y.PathPrefix, "/"))
				if len(px) <= len(py) {
					continue
				}
				yb := strings.ToLower(y.BasePath)
				if underPrefix(yb, px) || underPrefix(px, yb) {
					bad(x, "match.path_prefix", "%s of %s hides the gateway endpoints %s of %s on %s", x.PathPrefix, x.ref(), y.BasePath, y.ref(), sharedText(x, y))
				}
				for _, r := range y.Routes {
					if rp := strings.ToLower(strings.TrimSuffix(r, "/")); underPrefix(rp, px) || underPrefix(px, rp) {
						bad(x, "match.path_prefix", "%s of %s hides the route %s of %s on %s", x.PathPrefix, x.ref(), r, y.ref(), sharedText(x, y))
					}
				}
			}
		}
	}
	// Each frontend's own callback, at its public URL, must reach it: a
	// public_url outside its hosts, or endpoints another frontend takes,
	// would send the provider's answer elsewhere.
	entries := make([]hostEntry, len(fs))
	for i, s := range fs {
		entries[i] = matchOf(s, nil)
		entries[i].index = i
	}
	sortEntries(entries)
	for _, s := range fs {
		if s.PublicHost == "" {
			continue
		}
		cb := s.BasePath + "/callback"
		e := selectEntry(entries, []byte(strings.ToLower(s.PublicHost)), cb)
		switch {
		case e == nil:
			bad(s, "public_url", "the callback of %s at host %s (%s) reaches no frontend: its public_url's host must be among its match.hosts", s.ref(), s.PublicHost, cb)
		case fs[e.index].Index != s.Index:
			bad(s, "public_url", "the callback of %s at host %s (%s) would reach %s, whose match takes it: check this frontend's public_url and match.hosts, and that one's path_prefix", s.ref(), s.PublicHost, cb, fs[e.index].ref())
		}
	}
	return errors.Join(errs...)
}

// sharedHosts reports whether a and b can both match one request's host,
// and whether they match it on equal terms (both host-specific, or both
// any-host): a host-specific frontend beats an any-host one.
func sharedHosts(a, b FrontendSpec) (shared, equal bool) {
	switch {
	case len(a.Hosts) == 0 && len(b.Hosts) == 0:
		return true, true
	case len(a.Hosts) == 0 || len(b.Hosts) == 0:
		return true, false
	}
	for _, h := range a.Hosts {
		if slices.ContainsFunc(b.Hosts, func(o string) bool { return normHost(h) == normHost(o) }) {
			return true, true
		}
	}
	return false, false
}

func sharedText(a, b FrontendSpec) string {
	switch {
	case len(a.Hosts) == 0 && len(b.Hosts) == 0:
		return "any host"
	case len(a.Hosts) == 0:
		return b.hostText()
	case len(b.Hosts) == 0:
		return a.hostText()
	}
	var hs []string
	for _, h := range a.Hosts {
		if slices.ContainsFunc(b.Hosts, func(o string) bool { return normHost(h) == normHost(o) }) {
			hs = append(hs, h)
		}
	}
	return "host " + strings.Join(hs, ", ")
}
