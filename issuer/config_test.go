package issuer_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/internal/datafile"
	"github.com/bffgate/bffgate/issuer"
	"github.com/bffgate/bffgate/issuer/storage/bolt"
)

// TestConfigValidation: issuer.New refuses what is unsafe in the clients
// and users, with an error naming the YAML key path and what to do, and
// accepts the safe variants (https, http on loopback, a native app's
// private-use scheme on a public client).
func TestConfigValidation(t *testing.T) {
	t.Parallel()
	db, err := datafile.Open(filepath.Join(t.TempDir(), "bffgate.db"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := bolt.New(db, bolt.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// client adds a fifth client (issuer.clients[4]) to the fixture's.
	client := func(c issuer.Client) func(*issuer.Config) {
		return func(cfg *issuer.Config) {
			if c.ID == "" {
				c.ID = "new"
			}
			cfg.Clients = append(cfg.Clients, c)
		}
	}
	const secret = "new-secret-0123456789abcdef"
	redirect := func(uri string, public bool) func(*issuer.Config) {
		c := issuer.Client{RedirectURIs: []string{uri}}
		if !public {
			c.Secret = secret
		}
		return client(c)
	}
	postLogout := func(uri string) func(*issuer.Config) {
		return client(issuer.Client{Secret: secret, RedirectURIs: []string{"https://new.example.test/cb"}, PostLogoutRedirectURIs: []string{uri}})
	}
	for _, tc := range []struct {
		name string
		edit func(*issuer.Config)
		// want holds phrases of the error (the key path first); none
		// means the configuration is accepted.
		want []string
	}{
		{"https redirect", redirect("https://app.example.test/cb", false), nil},
		{"http on 127.0.0.1", redirect("http://127.0.0.1:8080/cb", false), nil},
		{"http on 127.0.0.0/8", redirect("http://127.1.2.3/cb", false), nil},
		{"http on [::1]", redirect("http://[::1]:8080/cb", false), nil},
		{"http on localhost", redirect("http://localhost:3000/cb", true), nil},
		{"http on LOCALHOST", redirect("http://LOCALHOST/cb", true), nil},
		{"http on a name under localhost", redirect("http://admin.localhost:8080/bff/callback", false), nil},
		{"http on a name ending in localhost, not under it", redirect("http://evillocalhost/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "plain http"}},
		{"http on localhost as a subdomain of another name", redirect("http://localhost.evil.example/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "plain http"}},
		{"private-use scheme on a public client", redirect("com.example.app:/oauth2redirect", true), nil},
		{"http outside loopback", redirect("http://app.example.test/cb", false),
			[]string{"issuer.clients[4].redirect_uris[0]", "plain http", "use https", "127.0.0.1"}},
		{"http on a LAN address", redirect("http://192.168.1.5/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "plain http"}},
		{"http on a name that starts with localhost", redirect("http://localhost.evil.example/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "plain http"}},
		{"http on a name that starts with 127.0.0.1", redirect("http://127.0.0.1.nip.io/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "plain http"}},
		{"http outside loopback, insecure switch on", client(issuer.Client{Secret: secret, RedirectURIs: []string{"http://192.168.1.5/cb"}, InsecureAllowHTTPRedirects: true}), nil},
		{"javascript redirect", redirect("javascript:alert(document.domain)//", true), []string{"issuer.clients[4].redirect_uris[0]", "javascript:", "executes"}},
		{"JavaScript redirect, any case", redirect("JaVaScRiPt:alert(1)", true), []string{"issuer.clients[4].redirect_uris[0]", "javascript:"}},
		{"data redirect", redirect("data:text/html,<script>alert(1)</script>", true), []string{"issuer.clients[4].redirect_uris[0]", "data:"}},
		{"file redirect", redirect("file:///etc/passwd", true), []string{"issuer.clients[4].redirect_uris[0]", "file:"}},
		{"private-use scheme not a reverse domain", redirect("myapp:/cb", true), []string{"issuer.clients[4].redirect_uris[0]", "reverse domain", "RFC 8252 section 7.1"}},
		{"private-use scheme on a confidential client", redirect("com.example.app:/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "public client"}},
		{"user information", redirect("https://user:pass@app.example.test/cb", false), []string{"issuer.clients[4].redirect_uris[0]", "user information"}},
		{"second redirect URI", client(issuer.Client{Secret: secret, RedirectURIs: []string{"https://app.example.test/cb", "http://app.example.test/cb"}}), []string{"issuer.clients[4].redirect_uris[1]", "plain http"}},
		{"post-logout https", postLogout("https://new.example.test/bye"), nil},
		{"post-logout http on loopback", postLogout("http://127.0.0.1:8080/bye"), nil},
		{"post-logout javascript", postLogout("javascript:alert(1)"), []string{"issuer.clients[4].post_logout_redirect_uris[0]", "must be https"}},
		{"post-logout data", postLogout("data:text/html,hi"), []string{"issuer.clients[4].post_logout_redirect_uris[0]", "must be https"}},
		{"post-logout private-use scheme", postLogout("com.example.app:/bye"), []string{"issuer.clients[4].post_logout_redirect_uris[0]", "must be https"}},
		{"post-logout http outside loopback", postLogout("http://new.example.test/bye"), []string{"issuer.clients[4].post_logout_redirect_uris[0]", "plain http"}},
		{"client id is a user's subject", client(issuer.Client{ID: "user-alice", Secret: secret, GrantTypes: []string{issuer.GrantClientCredentials}}),
			[]string{"issuer.users[0].subject", "issuer.clients[4]", "must differ"}},
		{"client id is a user's username-subject", func(c *issuer.Config) {
			c.Users[0].Subject = ""
			client(issuer.Client{ID: "alice", Secret: secret, GrantTypes: []string{issuer.GrantClientCredentials}})(c)
		}, []string{"issuer.users[0].username", "issuer.clients[4]"}},
		{"subject with the client prefix", func(c *issuer.Config) { c.Users[0].Subject = issuer.ClientSubject(svcID) },
			[]string{"issuer.users[0].subject", "reserves", "client_credentials"}},
		{"duplicate subject", func(c *issuer.Config) {
			u := c.Users[0]
			u.Username = "alice2"
			c.Users = append(c.Users, u)
		}, []string{"issuer.users[1].subject", "issuer.users[0]", "unique"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig()
			cfg.Issuer = "http://127.0.0.1:9"
			cfg.Store = store
			cfg.Logger = slog.New(slog.DiscardHandler)
			tc.edit(&cfg)
			_, err := issuer.New(context.Background(), cfg)
			switch {
			case len(tc.want) == 0 && err != nil:
				t.Fatalf("refused: %v", err)
			case len(tc.want) == 0:
				return
			case err == nil:
				t.Fatalf("accepted; want an error naming %q", tc.want[0])
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tc.want[0]+": ") {
				t.Errorf("error %q does not start with the key path %q", msg, tc.want[0])
			}
			for _, p := range tc.want[1:] {
				if !strings.Contains(msg, p) {
					t.Errorf("error %q lacks %q", msg, p)
				}
			}
		})
	}
}
