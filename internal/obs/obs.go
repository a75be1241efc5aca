// Package obs is the observability every bffgate listener shares: a
// request id on every request, one structured access-log line per request,
// Prometheus request counters and latency histograms by route and status,
// and the /healthz, /readyz and /metrics endpoints.
//
// Route labels are fiber's route patterns ("/api/*", "/token") or the name
// a handler gives with SetRoute (a proxied API route's configured prefix,
// "spa"), never raw paths, so label cardinality stays bounded whatever
// clients send. Method labels come from a fixed list ("other" for the
// rest). No label value points into fasthttp's request buffers, which are
// reused for the next request once the handler returns: a label kept by
// Prometheus that did would change under it (a GET counted as "GETT") and
// make /metrics fail once two series collide. The access log records the
// path without its query string: queries carry authorization codes and
// states, which never reach a log line.
package obs

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// HeaderRequestID carries the request id in and out.
const HeaderRequestID = "X-Request-Id"

var hRequestID = []byte(HeaderRequestID)

const (
	localsRequestID = "obs.requestid"
	localsRoute     = "obs.route"
)

// Config configures an Obs for one listener.
type Config struct {
	// Component names the listener ("issuer", "gateway", "demoapi"); it
	// becomes the component label of every metric and log line.
	Component string
	// Logger receives the access log; nil means slog.Default(). It should
	// already name the component (cmd/bffgate passes each piece a logger
	// With "component"); obs does not add it again.
	Logger *slog.Logger
	// Registerer receives the request metrics; nil means none are kept.
	Registerer prometheus.Registerer
	// Gatherer is what /metrics serves; nil means no /metrics route.
	Gatherer prometheus.Gatherer
	// AccessLog logs one line per request at Info when true.
	AccessLog bool
}

// Obs holds one listener's request metrics and logger.
type Obs struct {
	cfg      Config
	log      *slog.Logger
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	refused  *prometheus.CounterVec
	// series holds the request counter and latency histogram of each
	// (route, method, status) seen, bound once: WithLabelValues hashes
	// its labels and formats the status on every call, where a bound
	// series costs one map read. The map is replaced whole (under
	// seriesMu) when a new series appears, which stops happening once
	// the routes have been seen: a plain map read, without sync.Map's
	// boxing of the key (issue 20).
	series   atomic.Pointer[map[seriesKey]*series]
	seriesMu sync.Mutex
	// idPrefix and idNext make request ids: a random prefix drawn at New
	// and a counter that starts at a random value (see newRequestID).
	idPrefix [4]byte
	idNext   atomic.Uint64
	// pool recycles the per-request state Middleware keeps in the
	// request's Locals.
	pool sync.Pool // *request
}

// request is what Middleware keeps of one request, in its Locals: the
// request id and the route SetRoute names. One pooled value in place of
// a boxed string for each and the id's own string (three allocations per
// request); the id becomes a string only where one is asked for.
type request struct {
	id    [64]byte // the request id: validRequestID's at most 64 bytes
	n     int
	route string
	// frontend names the frontend that served the request (SetFrontend;
	// "" with one frontend): the access line carries it.
	frontend string
}

func (r *request) idString() string { return string(r.id[:r.n]) }

type seriesKey struct {
	route, method string
	status        int
}

type series struct {
	requests prometheus.Counter
	latency  prometheus.Observer
}

// seriesFor returns the bound metrics of one route, method and status.
// route and method are fixed strings (route patterns, configured
// prefixes, the method list), never request bytes, so the key may be
// kept.
func (o *Obs) seriesFor(route, method string, status int) *series {
	k := seriesKey{route, method, status}
	if m := o.series.Load(); m != nil {
		if s, ok := (*m)[k]; ok {
			return s
		}
	}
	o.seriesMu.Lock()
	defer o.seriesMu.Unlock()
	old := o.series.Load()
	if old != nil {
		if s, ok := (*old)[k]; ok {
			return s
		}
	}
	m := map[seriesKey]*series{}
	if old != nil {
		m = maps.Clone(*old)
	}
	code := strconv.Itoa(status)
	s := &series{
		requests: o.requests.WithLabelValues(route, method, code),
		latency:  o.latency.WithLabelValues(route, method, code),
	}
	m[k] = s
	o.series.Store(&m)
	return s
}

// New returns an Obs for cfg. It fails when the metrics cannot be
// registered (a second Obs with the same Component on one registry).
func New(cfg Config) (*Obs, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	o := &Obs{cfg: cfg, log: cfg.Logger}
	var seed [12]byte
	if _, err := rand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("obs: request id seed: %w", err)
	}
	copy(o.idPrefix[:], seed[:4])
	o.idNext.Store(binary.BigEndian.Uint64(seed[4:]))
	o.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_http_requests_total",
		Help: "HTTP requests served, by route pattern, method and status code.",
	}, []string{"route", "method", "status"})
	o.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "bffgate_http_request_duration_seconds",
		Help:    "Time to serve an HTTP request, by route pattern, method and status code.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method", "status"})
	o.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bffgate_http_requests_refused_total",
		Help: "Requests refused at the edge for what they are, not what they ask (ambiguous framing, malformed header or body, forbidden trailer, oversized header or body, compressed body, read timeout), by reason.",
	}, []string{"reason"})
	if cfg.Registerer != nil {
		reg := prometheus.WrapRegistererWith(prometheus.Labels{"component": cfg.Component}, cfg.Registerer)
		for _, c := range []prometheus.Collector{o.requests, o.latency, o.refused} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return o, nil
}

// Logger returns the listener's logger (component attribute set).
func (o *Obs) Logger() *slog.Logger { return o.log }

// Middleware assigns the request id, and after the handler records the
// metrics and the access-log line.
func (o *Obs) Middleware() fiber.Handler {
	return func(c *fiber.Ctx) error {
		start := time.Now()
		r, _ := o.pool.Get().(*request)
		if r == nil {
			r = new(request)
		}
		r.route, r.frontend = "", ""
		if id := c.Request().Header.Peek(HeaderRequestID); validRequestID(id) {
			r.n = copy(r.id[:], id) // detached from fasthttp's reused buffer
		} else {
			r.n = len(o.appendRequestID(r.id[:0]))
		}
		c.Locals(localsRequestID, r)
		c.Response().Header.SetCanonical(hRequestID, r.id[:r.n]) // the name is canonical: no normalising copy

		err := c.Next()
		if err != nil {
			// Let fiber's error handler write the response now so that the
			// status recorded is the one the client gets.
			if herr := c.App().ErrorHandler(c, err); herr != nil {
				_ = c.SendStatus(fiber.StatusInternalServerError)
			}
			err = nil
		}
		status := c.Response().StatusCode()
		route := r.route
		if route == "" {
			route, _ = c.Locals(localsRoute).(string)
		}
		if route == "" {
			route = c.Route().Path
			if route == "" || route == "/" && c.Path() != "/" {
				route = "unmatched"
			}
		}
		method := methodLabel(c.Method())
		elapsed := time.Since(start)
		m := o.seriesFor(route, method, status)
		m.requests.Inc()
		m.latency.Observe(elapsed.Seconds())
		if o.cfg.AccessLog || status >= 500 {
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			o.accessLine(c, level, r, method, route, status, elapsed)
		}
		// The request is over: nothing reads its Locals after this
		// handler (fasthttp resets them), and r serves the next one.
		c.Locals(localsRequestID, nil)
		r.route, r.frontend = "", ""
		o.pool.Put(r)
		return err
	}
}

// accessLine logs the request's access line. A handler of this package
// (NewJSONHandler, or NewLogHandler around one) writes it from its fields
// (accessHandler); any other gets the record, handed to it as
// Logger.LogAttrs would, but without the caller's program counter:
// LogAttrs walks the stack for it on every line (runtime.Callers, a fifth
// of the line's cost), and only a handler with AddSource reads it, which
// none of bffgate's has. The line is the same either way.
func (o *Obs) accessLine(c *fiber.Ctx, level slog.Level, r *request, method, route string, status int, elapsed time.Duration) {
	a := accessRecord{
		time:      time.Now(),
		level:     level,
		requestID: r.id[:r.n],
		method:    method,
		route:     route,
		path:      c.Path(), // never the query: it may hold codes
		status:    status,
		duration:  elapsed,
		frontend:  r.frontend,
	}
	h := o.log.Handler()
	if ah, ok := h.(accessHandler); ok && ah.handleAccess(a) {
		return
	}
	ctx := c.UserContext()
	if !h.Enabled(ctx, level) {
		return
	}
	_ = h.Handle(ctx, a.record())
}

// accessMsg is the access line's message.
const accessMsg = "request"

// accessRecord is what an access line says. requestID and path borrow
// the request's buffers (the pooled request, fasthttp's URI): record
// copies them, and an accessHandler writes them before it returns.
type accessRecord struct {
	time      time.Time
	level     slog.Level
	requestID []byte
	method    string
	route     string
	path      string
	status    int
	duration  time.Duration
	frontend  string // "" with one frontend on the listener
}

// record returns the line as a slog.Record, its strings copied: a handler
// may keep a record past the request.
func (a *accessRecord) record() slog.Record {
	rec := slog.NewRecord(a.time, a.level, accessMsg, 0)
	rec.AddAttrs(
		slog.String("request_id", string(a.requestID)),
		slog.String("method", a.method),
		slog.String("route", a.route),
		slog.String("path", strings.Clone(a.path)),
		slog.Int("status", a.status),
		slog.Duration("duration", a.duration),
	)
	if a.frontend != "" {
		// One of several frontends on this listener served it.
		rec.AddAttrs(slog.String("frontend", a.frontend))
	}
	return rec
}

// accessHandler is a handler that writes an access line from its fields,
// without building a slog.Record (a fifth of the line's cost).
// handleAccess reports whether it dealt with the line: wrote it as Handle
// would write a.record(), or left it out because its level is disabled.
// On false it has written nothing and the caller goes through Enabled and
// Handle. It must not keep a's byte slices or strings: they borrow
// buffers the next request reuses.
type accessHandler interface {
	handleAccess(a accessRecord) bool
}

// SetRoute names the route of the request for the metrics and the access
// log, for a handler that dispatches itself (an app.Use handler has no
// route pattern of its own). route must be a fixed name, such as a
// configured prefix, never a value taken from the request.
func SetRoute(c *fiber.Ctx, route string) {
	if r, ok := c.Locals(localsRequestID).(*request); ok {
		r.route = route
		return
	}
	c.Locals(localsRoute, route)
}

// SetFrontend names the frontend that served the request, for the access
// log (several frontends on one listener). name must be a configured
// frontend's name, never a value taken from the request.
func SetFrontend(c *fiber.Ctx, name string) {
	if r, ok := c.Locals(localsRequestID).(*request); ok {
		r.frontend = name
	}
}

// Refused counts a request refused at the edge, by reason (an edge.Error
// Kind).
func (o *Obs) Refused(reason string) { o.refused.WithLabelValues(reason).Inc() }

// methods are the method label values; any other method is "other", so
// that neither a client's invented method nor fasthttp's buffer behind
// c.Method() ever becomes a label value.
var methods = map[string]string{
	fiber.MethodGet: fiber.MethodGet, fiber.MethodHead: fiber.MethodHead, fiber.MethodPost: fiber.MethodPost,
	fiber.MethodPut: fiber.MethodPut, fiber.MethodPatch: fiber.MethodPatch, fiber.MethodDelete: fiber.MethodDelete,
	fiber.MethodOptions: fiber.MethodOptions, fiber.MethodConnect: fiber.MethodConnect, fiber.MethodTrace: fiber.MethodTrace,
}

func methodLabel(m string) string {
	if l, ok := methods[m]; ok {
		return l
	}
	return "other"
}

// RequestID returns the request id Middleware assigned ("" outside it),
// as a new string.
func RequestID(c *fiber.Ctx) string {
	if r, ok := c.Locals(localsRequestID).(*request); ok {
		return r.idString()
	}
	return ""
}

// Check is one readiness check; it returns nil when the dependency is up.
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Mount adds GET /healthz (the process is up), GET /readyz (every check
// passes; 503 with the failing checks otherwise) and, when a Gatherer is
// configured, GET /metrics.
func (o *Obs) Mount(r fiber.Router, checks ...Check) {
	r.Get("/healthz", func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"status": "ok"})
	})
	r.Get("/readyz", func(c *fiber.Ctx) error {
		ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
		defer cancel()
		failed := map[string]string{}
		for _, ch := range checks {
			if err := ch.Fn(ctx); err != nil {
				failed[ch.Name] = err.Error()
				o.log.Warn("readiness check failed", "check", ch.Name, "err", err)
			}
		}
		if len(failed) > 0 {
			return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "failed": failed})
		}
		return c.JSON(fiber.Map{"status": "ready"})
	})
	if o.cfg.Gatherer != nil {
		r.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(o.cfg.Gatherer, promhttp.HandlerOpts{})))
	}
}

func validRequestID[T string | []byte](s T) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '-' || b == '_' || b == '.') {
			return false
		}
	}
	return true
}

// appendRequestID appends a new request id to dst: 24 hex digits, the
// Obs's random 32-bit prefix and a 64-bit counter from a random start.
// Ids are unique within a process (the counter does not wrap in practice)
// and apart between processes unless two draw the same prefix and
// overlapping counter ranges. They are no secret (a client may send its
// own): reading 12 bytes from crypto/rand per request cost more than the
// rest of the id (issue 20).
func (o *Obs) appendRequestID(dst []byte) []byte {
	var b [12]byte
	copy(b[:4], o.idPrefix[:])
	binary.BigEndian.PutUint64(b[4:], o.idNext.Add(1))
	return hex.AppendEncode(dst, b[:])
}
