package issuer

import "github.com/prometheus/client_golang/prometheus"

// metrics are the issuer's Prometheus metrics. They exist (and count) even
// without a Registerer, so that the code never checks for nil.
type metrics struct {
	minted         *prometheus.CounterVec
	errors         *prometheus.CounterVec
	logins         *prometheus.CounterVec
	revocations    *prometheus.CounterVec
	reuse          prometheus.Counter
	backchannel    *prometheus.CounterVec
	introspections *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		minted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_tokens_minted_total",
			Help: "Tokens minted by the issuer, by grant type, kind (access, refresh, id) and format (signed, encrypted).",
		}, []string{"grant_type", "kind", "format"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_errors_total",
			Help: "OAuth errors returned by the issuer, by endpoint and RFC 6749 error code.",
		}, []string{"endpoint", "code"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_logins_total",
			Help: "Issuer logins by result: success (password), failure (wrong username or password), sso (an existing login session was used).",
		}, []string{"result"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_revocations_total",
			Help: "Revocations by kind: access_token, refresh_token (RFC 7009), grant (code replay, refresh reuse), session (logout).",
		}, []string{"kind"}),
		reuse: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_refresh_reuse_total",
			Help: "Refresh tokens presented after they were rotated away (RFC 9700 §4.14.2); each revoked its grant.",
		}),
		backchannel: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_backchannel_logout_total",
			Help: "OpenID Connect Back-Channel Logout requests sent, by result (ok, error).",
		}, []string{"result"}),
		introspections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_introspections_total",
			Help: "Token introspections (RFC 7662) by result (active, inactive).",
		}, []string{"result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.minted, m.errors, m.logins, m.revocations, m.reuse, m.backchannel, m.introspections} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
