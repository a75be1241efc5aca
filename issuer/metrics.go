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
	passwordChecks prometheus.Counter
	lockouts       *prometheus.CounterVec
	refused        *prometheus.CounterVec
	exchanges      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		minted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_tokens_minted_total",
			Help: "Tokens minted by the issuer, by grant type, kind (access, refresh, id) and format (signed, encrypted, sealed).",
		}, []string{"grant_type", "kind", "format"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_errors_total",
			Help: "OAuth errors returned by the issuer, by endpoint and RFC 6749 error code.",
		}, []string{"endpoint", "code"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_logins_total",
			Help: "Issuer logins by result: success (password), failure (wrong username or password), locked (refused by the login throttle), sso (an existing login session was used).",
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
		passwordChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_issuer_password_checks_total",
			Help: "Password hashes (argon2id or bcrypt) computed by the login form, the decoy check for an unknown username included. Attempts the login throttle refuses compute none.",
		}),
		lockouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_login_lockouts_total",
			Help: "Lockouts started by the login throttle, by scope: username (too many failed logins for one username) or address (too many from one client address).",
		}, []string{"scope"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_login_refused_total",
			Help: "Login attempts refused because the username or the client address was locked, by the scope of the lock (username, address).",
		}, []string{"scope"}),
		exchanges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_issuer_token_exchanges_total",
			Help: "Token exchanges (RFC 8693) by client, decision (granted, refused) and, when refused, the error code (invalid_grant, invalid_target, invalid_scope, ...).",
		}, []string{"client_id", "decision", "error"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.minted, m.errors, m.logins, m.revocations, m.reuse, m.backchannel, m.introspections, m.passwordChecks, m.lockouts, m.refused, m.exchanges} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
