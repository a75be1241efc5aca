package proxy

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus series; nil methods are no-ops so
// that a Proxy without a Registerer keeps none.
type metrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
	retries  *prometheus.CounterVec
	// observers holds the duration histogram of each (route, status)
	// seen, bound once: WithLabelValues hashes its labels and formats the
	// status on every call, where a bound series costs one map read
	// (as obs binds the request metrics).
	observers sync.Map // durationKey -> prometheus.Observer
}

type durationKey struct {
	route  string // a route's configured prefix, never request bytes
	status int
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bffgate_proxy_request_duration_seconds",
			Help:    "Time from forwarding an API request to the upstream's response headers (or the gateway's 502/504), by route prefix and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "status"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_proxy_upstream_errors_total",
			Help: "Upstream calls that got no response, by route prefix and kind (connect, timeout, closed, pool_exhausted, protocol, websocket).",
		}, []string{"route", "kind"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_proxy_upstream_retries_total",
			Help: "Idempotent requests sent again on a new connection because the upstream had closed the kept-alive connection they were sent on before answering, by upstream (scheme://host). A steady rate says the upstream keeps idle connections for less than gateway.routes[].idle_timeout.",
		}, []string{"upstream"}),
	}
	// A second Proxy on the same registry (tests, a reload) shares the
	// series already registered.
	if err := reg.Register(m.duration); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("proxy: registering metrics: %w", err)
		}
		m.duration = are.ExistingCollector.(*prometheus.HistogramVec)
	}
	if err := reg.Register(m.errors); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("proxy: registering metrics: %w", err)
		}
		m.errors = are.ExistingCollector.(*prometheus.CounterVec)
	}
	if err := reg.Register(m.retries); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("proxy: registering metrics: %w", err)
		}
		m.retries = are.ExistingCollector.(*prometheus.CounterVec)
	}
	return m, nil
}

func (m *metrics) retried(upstream string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(upstream).Inc()
}

func (m *metrics) observe(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	k := durationKey{route, status}
	o, ok := m.observers.Load(k)
	if !ok {
		o, _ = m.observers.LoadOrStore(k, m.duration.WithLabelValues(route, strconv.Itoa(status)))
	}
	o.(prometheus.Observer).Observe(d.Seconds())
}

func (m *metrics) upstreamError(route, kind string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(route, kind).Inc()
}
