package bff

import "github.com/prometheus/client_golang/prometheus"

// metrics are the gateway's own counters; obs adds the request metrics.
type metrics struct {
	loginsStarted      prometheus.Counter
	loginsCompleted    prometheus.Counter
	loginsFailed       *prometheus.CounterVec
	logouts            prometheus.Counter
	backchannelLogouts *prometheus.CounterVec
	sessionsCreated    prometheus.Counter
	decisions          *prometheus.CounterVec
	forwardAuth        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		loginsStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_gateway_logins_started_total",
			Help: "Logins started at the gateway's login endpoint (redirects to the provider).",
		}),
		loginsCompleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_gateway_logins_completed_total",
			Help: "Logins completed at the callback with a new session.",
		}),
		loginsFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_gateway_logins_failed_total",
			Help: "Logins that failed, by reason (provider_error, flow_missing, exchange_failed, id_token_invalid, userinfo_failed, session_store, invalid_return_url, invalid_request).",
		}, []string{"reason"}),
		logouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_gateway_logouts_total",
			Help: "Sessions ended by the browser through the logout endpoint.",
		}),
		backchannelLogouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_gateway_backchannel_logouts_total",
			Help: "Back-channel logout requests, by result (ok, invalid_token, replayed, store_error).",
		}, []string{"result"}),
		sessionsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bffgate_gateway_sessions_created_total",
			Help: "Sessions created (one per completed login).",
		}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_gateway_authz_decisions_total",
			Help: "Authorization decisions of routes with allow/deny rules, by route prefix and result (allowed, denied, error: a rule failed to evaluate and the call was denied).",
		}, []string{"route", "result"}),
		forwardAuth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bffgate_gateway_forward_auth_decisions_total",
			Help: "Decisions of the forward-auth endpoint, by rule (host and prefix; none when no rule applied) and result (allowed, denied, unauthenticated, error: a rule failed to evaluate, or the session store or provider failed).",
		}, []string{"rule", "result"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.loginsStarted, m.loginsCompleted, m.loginsFailed, m.logouts, m.backchannelLogouts, m.sessionsCreated, m.decisions, m.forwardAuth} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
