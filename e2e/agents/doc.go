// Package agents holds the end-to-end tests of agent and workload identity
// (issue 17) against the real bffgate binary (e2e/stack):
//
//   - panva's openid-client with its PrivateKeyJwt client authentication:
//     client_credentials, the code flow with PKCE through the issuer's login
//     and consent pages (ID token validated by openid-client), refresh,
//     introspection and revocation;
//   - client assertions made by panva's jose for every bad case (expired,
//     not yet valid, replayed, wrong aud, iss or sub, a key not in the
//     client's set, alg none, HS256 keyed with the client's public key);
//   - JWT-SVIDs made by the test for trust domains whose bundles it serves
//     (a bundle file and a bundle endpoint), verified by the issuer through
//     go-spiffe;
//   - the JWT bearer grant from a trusted test issuer, refused from an
//     untrusted one;
//   - `bffgate agents disable|enable` on the data file, and across two
//     instances sharing Redis;
//   - the audit chain checked by `bffgate audit verify`, then a record
//     edited and the break found.
//
// Run them with
//
//	BFFGATE_E2E_REQUIRE=1 BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -count=1 ./e2e/agents/
//
// # Caveats
//
// Without node/npm the openid-client and jose tests skip with a message,
// unless BFFGATE_E2E_REQUIRE=1. The Redis test skips without
// BFFGATE_TEST_REDIS_URL.
package agents
