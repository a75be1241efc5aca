package issuer

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PurgeInterval is how often Run removes expired records from the store:
// codes, allowlist records, grants, denylist entries and their change-log
// entries, login sessions and login-throttle state. Every instance sharing
// a store purges; the stores' transactions keep concurrent purges
// harmless (a record is removed once, and a loser retries or finds it
// gone). Correctness never waits for a purge (every record carries its
// expiry, checked on read); purging keeps the store from growing.
const PurgeInterval = time.Minute

// purgeMetrics count the purge job's work.
type purgeMetrics struct {
	purged prometheus.Counter
	errors prometheus.Counter
}

func newPurgeMetrics(reg prometheus.Registerer) (purgeMetrics, error) {
	m := purgeMetrics{
		purged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_store_purged_total",
			Help: "Expired records (codes, refresh tokens, grants, denylist entries, login sessions, throttle state) removed from the issuer's store by the purge job.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_store_purge_errors_total",
			Help: "Purges of the issuer's store that failed (retried at the next interval).",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.purged, m.errors} {
			if err := reg.Register(c); err != nil {
				return m, err
			}
		}
	}
	return m, nil
}

// purge removes the records expired at the issuer's clock from the store
// and reports how many it removed. Run calls it every PurgeInterval.
func (s *Server) purge(ctx context.Context) (int, error) {
	n, err := s.stores.purge.Purge(ctx, s.now())
	s.purgeMetrics.purged.Add(float64(n))
	if err != nil {
		s.purgeMetrics.errors.Inc()
	}
	return n, err
}

// runPurge purges at once and then every PurgeInterval until ctx is done.
// A failure (the store down) is logged and left to the next round.
func (s *Server) runPurge(ctx context.Context) {
	t := time.NewTicker(PurgeInterval)
	defer t.Stop()
	for {
		n, err := s.purge(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.log.Warn("purge of expired issuer records failed; they stay until the next purge", "err", err, "removed", n, "next_in", PurgeInterval.String())
		case n > 0:
			s.log.Debug("purged expired issuer records", "removed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
