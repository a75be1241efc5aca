package main

// forwardAuthWarnings are the start-up warnings about gateway.forward_auth:
// a configuration that loads but cannot work as meant.
func forwardAuthWarnings(cfg *Config) []string {
	gw := cfg.Gateway
	if !*gw.Enabled || len(gw.ForwardAuth.Rules) == 0 {
		return nil
	}
	var w []string
	if len(gw.TrustedProxies) == 0 {
		w = append(w, "gateway.forward_auth has rules but gateway.trusted_proxies is empty: "+
			"the proxy's X-Original-URI and X-Forwarded-* headers are not believed, so every forward-auth decision denies; list the proxy's address")
	}
	if gw.Session.Store == "cookie" {
		w = append(w, "gateway.forward_auth with gateway.session.store: cookie: a decision that renews the session "+
			"answers a new cookie, which proxies do not pass to the browser (nginx keeps one Set-Cookie at most, Caddy and Traefik none by default); "+
			"use the bbolt or redis session store, whose cookie does not change")
	}
	return w
}
