// Package faults holds the process-level tests of the fault findings
// ("What broke when bffgate was used for real", section Faults): the real
// bffgate binary (e2e/stack) on a data directory that fills up (a small
// tmpfs filled to the last byte), and on a Redis of the test's own that is
// flushed under running instances or frozen with SIGSTOP.
//
//   - Full disk, issuer: refresh grants and the login form answer 503
//     temporarily_unavailable, never 500 server_error; /readyz fails; the
//     issuer recovers when space is freed, with nothing lost.
//   - Full disk, gateway: a refresh whose rotated tokens cannot be saved
//     does not end the session: past the grace window and through further
//     rotations the gateway serves the held tokens, the provider never
//     sees a rotated-away refresh token, /readyz fails, and once space is
//     freed the tokens are saved (they survive a restart).
//   - Redis restarted empty under two instances, one of them restarted:
//     keys and generated secrets are put back, so both instances keep
//     verifying each other's tokens and accepting each other's cookies.
//   - Frozen Redis: every request is answered with 503 JSON within about
//     the configured redis timeouts, and the instance serves again once
//     Redis resumes.
//
// Mounting the tmpfs needs root; where it is refused the full-disk tests
// skip, unless BFFGATE_E2E_REQUIRE is set. The Redis tests need
// redis-server installed and never touch any other Redis.
package faults
