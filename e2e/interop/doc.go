// Package interop holds bffgate's interoperability tests (issue 7): both
// halves of bffgate driven by OpenID implementations no one here wrote.
//
//   - The embedded issuer against panva's openid-client (an OpenID Certified
//     relying party) and jose (an independent JOSE implementation), for
//     every signing algorithm and both encrypted formats: discovery, the
//     code flow with PKCE through the issuer's HTML login form, ID-token
//     validation, userinfo, refresh with rotation, introspection,
//     revocation, the end-session URL, token verification through the
//     published jwks_uri, and forged tokens.
//   - The gateway against panva's oidc-provider (an OpenID Certified
//     provider): login in chromium through the provider's login and consent
//     pages, API calls across access-token expiries with refresh-token
//     rotation under concurrency, logout with revocation and the provider's
//     end-session flow, back-channel logout, and provider failures.
//
// Every peer runs on loopback from the lock file in e2e/peers; the bffgate
// binary is the real one (e2e/stack). Run them with
//
//	BFFGATE_E2E_REQUIRE=1 go test -race -count=1 ./e2e/interop/
//
// # Caveats
//
// Without node/npm or chromium the tests skip with a message, unless
// BFFGATE_E2E_REQUIRE=1, when they fail. The gateway tests run against a
// real provider on real time: oidc-provider's clock cannot be moved from
// outside, so the rotation test waits for short (3 s) access tokens to
// expire instead of moving a clock.
package interop
