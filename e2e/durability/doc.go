// Package durability holds the process-level durability and concurrency
// tests of the embedded issuer (the lifecycle issue's "Durability and
// concurrency" section): the real bffgate binary, started by e2e/stack on
// loopback, killed with SIGKILL while requests are in flight and restarted
// on the same data directory; and refreshes of one refresh token racing
// over real HTTP.
//
// The package has no API: everything is in its tests, which talk to the
// issuer only over HTTP, as clients do (through e2e/issuerclient).
package durability
