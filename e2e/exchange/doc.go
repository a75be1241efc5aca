// Package exchange holds bffgate's token exchange tests (issue 16, RFC
// 8693) against the real binary (e2e/stack):
//
//   - the embedded issuer as a Security Token Service driven by panva's
//     openid-client (its genericGrantRequest), every issued token verified
//     by panva's jose through the published jwks_uri: impersonation,
//     delegation, nested act, audience and resource, scope narrowing and
//     widening, lifetime caps, the bad inputs of the issue, and revocation
//     of the subject's grant killing every exchanged token;
//   - a trusted external issuer whose JWKS the test serves (the STS case),
//     with tokens of another key, another audience or a may_act naming
//     someone else refused;
//   - the gateway's token.exchange route against an upstream that verifies
//     the exchanged token and checks its aud and act: one exchange for 100
//     parallel calls, a new one after the session refreshes, logout killing
//     it, and two processes on one Redis sharing one exchange.
//
// Run them with
//
//	BFFGATE_E2E_REQUIRE=1 BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -count=1 ./e2e/exchange/
package exchange
