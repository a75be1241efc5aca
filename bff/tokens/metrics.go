package tokens

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Manager's Prometheus series; nil methods are no-ops so
// that a Manager without a Registerer keeps none.
type metrics struct {
	refreshes   *prometheus.CounterVec
	duration    prometheus.Histogram
	clientFetch *prometheus.CounterVec
	revocations *prometheus.CounterVec
	exchanges   *prometheus.CounterVec
	exchangeDur prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		refreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_token_refresh_total",
			Help: "Session token refreshes by result: refreshed (at the provider), grace (from a just-rotated grace record), concurrent (done by another request or instance, whose tokens were kept), rejected (invalid_grant: session ended), unavailable (provider down: session kept), no_refresh_token, lock_unavailable, store_error, held (the store could not save rotated tokens: held in memory and served), held_saved (held tokens saved later); and, counted besides the refresh's own result, lock_lost (the refresh outlasted its lock) and lock_unverified (the lock could not be checked before saving).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bffgate_token_refresh_duration_seconds",
			Help:    "Duration of refresh_token grant calls at the provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		clientFetch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_token_client_credentials_total",
			Help: "Client-credentials token fetches by result (ok, error).",
		}, []string{"result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_token_revocations_total",
			Help: "RFC 7009 revocations at logout by result (ok, error).",
		}, []string{"result"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_token_exchange_total",
			Help: "Token exchanges (RFC 8693) for routes by target and result: cached (in-process), shared (another instance's exchange), exchanged (at the provider), refused (the provider's OAuth error: 403), unavailable (provider down: 503), lock_unavailable.",
		}, []string{"target", "result"}),
		exchangeDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "bffgate_token_exchange_duration_seconds",
			Help:    "Duration of token exchange calls at the provider.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
	}
	var err error
	if m.exchanges, err = register(reg, m.exchanges); err != nil {
		return nil, err
	}
	if m.exchangeDur, err = register(reg, m.exchangeDur); err != nil {
		return nil, err
	}
	if m.refreshes, err = register(reg, m.refreshes); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.clientFetch, err = register(reg, m.clientFetch); err != nil {
		return nil, err
	}
	if m.revocations, err = register(reg, m.revocations); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered
// under its name (a second Manager on one registry shares the series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("tokens: registering metrics: %w", err)
	}
	return c, nil
}

func (m *metrics) refresh(result string) {
	if m != nil {
		m.refreshes.WithLabelValues(result).Inc()
	}
}

func (m *metrics) refreshDuration(d time.Duration) {
	if m != nil {
		m.duration.Observe(d.Seconds())
	}
}

func (m *metrics) fetched(ok bool) {
	if m != nil {
		m.clientFetch.WithLabelValues(result(ok)).Inc()
	}
}

func (m *metrics) revoke(ok bool) {
	if m != nil {
		m.revocations.WithLabelValues(result(ok)).Inc()
	}
}

func result(ok bool) string {
	if ok {
		return "ok"
	}
	return "error"
}

func (m *metrics) exchange(target, result string) {
	if m != nil {
		m.exchanges.WithLabelValues(target, result).Inc()
	}
}

func (m *metrics) exchangeDuration(d time.Duration) {
	if m != nil {
		m.exchangeDur.Observe(d.Seconds())
	}
}
