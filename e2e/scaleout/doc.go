// Package scaleout holds the process-level tests of the scale-out issue:
// several bffgate processes (gateways and issuers) on loopback sharing one
// Redis, and the Redis outage fault, with a redis-server the test runs
// itself and stops in the middle of a load run.
//
// Topology. Every instance of a deployment presents the same issuer
// identifier, as instances behind one load balancer do. The tests have no
// load balancer: process A runs issuer A at its own URL, which is the
// issuer identifier, and process B runs issuer B with issuer.url set to
// A's URL while listening on its own port. Tokens minted by either carry
// the same iss and are signed with the keys both read from Redis; the
// tests send their back-channel requests (token, revoke, introspect) to
// each instance's own port. The gateways discover the issuer at the
// identifier (issuer A), and proxy to their own process's demo API.
//
// The package has no API: everything is in its tests, which reach the
// issuers as a client through e2e/issuerclient, and the gateways as the
// user's browser through its Browser.
package scaleout
