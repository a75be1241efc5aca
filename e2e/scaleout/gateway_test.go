package scaleout

import (
	"context"
	"testing"

	"github.com/bffgate/bffgate/e2e/issuerclient"
)

// user is the browser of the zero-config demo user, signing in through
// any of the test's gateways: they share the session store, so one
// session cookie serves at every one.
type user struct {
	*issuerclient.Browser
	t testing.TB
}

func newUser(t testing.TB) *user {
	return &user{Browser: issuerclient.NewBrowser(t), t: t}
}

// mustLogin signs in through the gateway at gatewayURL and returns the
// session's Cookie header, failing the test when it cannot. Call it from
// the test's goroutine only (testing.TB.Fatal).
func (u *user) mustLogin(gatewayURL string) string {
	u.t.Helper()
	c, err := u.GatewayLogin(context.Background(), gatewayURL, issuerclient.DemoUser, issuerclient.DemoPassword)
	if err != nil {
		u.t.Fatal(err)
	}
	return c
}

// whoami calls the demo API through the gateway at gatewayURL.
func (u *user) whoami(ctx context.Context, gatewayURL, cookie string) (issuerclient.Answer, error) {
	return u.Get(ctx, gatewayURL+"/api/whoami", cookie)
}
