package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"
	"gopkg.in/yaml.v3"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bffgate.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestZeroConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", nil)
	if err != nil {
		t.Fatalf("zero-config: %v", err)
	}
	if !cfg.zeroConfig || !*cfg.Issuer.Enabled || !*cfg.Gateway.Enabled || !*cfg.DemoAPI.Enabled {
		t.Fatalf("zero-config must run issuer, gateway and demo API: %+v", cfg)
	}
	if cfg.Gateway.Provider.IssuerURL != "http://127.0.0.1:9090" {
		t.Errorf("gateway provider = %q, want the embedded issuer", cfg.Gateway.Provider.IssuerURL)
	}
	if len(cfg.Gateway.Routes) != 1 || cfg.Gateway.Routes[0].Upstream != "http://127.0.0.1:9091" {
		t.Errorf("routes = %+v, want /api/ to the demo API", cfg.Gateway.Routes)
	}
}

// The example file must load strictly and mention every key, so that it
// documents the whole configuration.
func TestExampleConfigDocumentsEveryKey(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "bffgate.example.yaml")
	cfg, err := loadConfig(path, nil)
	if err != nil {
		t.Fatalf("bffgate.example.yaml: %v", err)
	}
	if cfg.zeroConfig {
		t.Fatal("a file was given: not zero-config")
	}
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	walkKeys(reflect.ValueOf(&Config{}).Elem(), "", func(key string, _ reflect.Value) {
		leaf := key[strings.LastIndex(key, ".")+1:]
		if !regexp.MustCompile(`(?m)^\s*(#\s*)?(- )?` + regexp.QuoteMeta(leaf) + `:`).Match(body) {
			missing = append(missing, key)
		}
	})
	if len(missing) > 0 {
		t.Errorf("bffgate.example.yaml does not document: %v", missing)
	}
}

func TestEnvironmentOverrides(t *testing.T) {
	t.Parallel()
	env := []string{
		"BFFGATE_GATEWAY_LISTEN=127.0.0.1:18080",
		"BFFGATE_ISSUER_TOKENS_ACCESS_TTL=90s",
		"BFFGATE_ISSUER_TOKENS_REFRESH_ROTATION=false",
		"BFFGATE_GATEWAY_SESSION_STORE=cookie",
		`BFFGATE_GATEWAY_ROUTES=[{"prefix":"/v1/","upstream":"http://127.0.0.1:7000","policy":"none"}]`,
		"BFFGATE_GATEWAY_PROVIDER_SCOPES=[openid, email]",
		"BFFGATE_GATEWAY_PROVIDER_CLIENT_SECRET=a: b # not yaml",
		"PATH=/usr/bin",
	}
	cfg, err := loadConfig("", env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.Listen != "127.0.0.1:18080" || cfg.Gateway.PublicURL != "http://127.0.0.1:18080" {
		t.Errorf("listen/public_url = %q/%q", cfg.Gateway.Listen, cfg.Gateway.PublicURL)
	}
	if cfg.Issuer.Tokens.AccessTTL != 90*time.Second || *cfg.Issuer.Tokens.RefreshRotation {
		t.Errorf("tokens = %+v", cfg.Issuer.Tokens)
	}
	if cfg.Gateway.Session.Store != "cookie" || cfg.Gateway.Provider.ClientSecret != "a: b # not yaml" {
		t.Errorf("session store %q, secret %q", cfg.Gateway.Session.Store, cfg.Gateway.Provider.ClientSecret)
	}
	if len(cfg.Gateway.Routes) != 1 || cfg.Gateway.Routes[0].Prefix != "/v1/" || cfg.Gateway.Routes[0].Policy != "none" {
		t.Errorf("routes = %+v", cfg.Gateway.Routes)
	}
	if !reflect.DeepEqual(cfg.Gateway.Provider.Scopes, []string{"openid", "email"}) {
		t.Errorf("scopes = %v", cfg.Gateway.Provider.Scopes)
	}
}

func TestFlagsWinOverEnvironment(t *testing.T) {
	t.Parallel()
	f := &commonFlags{listen: "127.0.0.1:1234", logLevel: "debug"}
	cfg, err := configFor(f, []string{"BFFGATE_GATEWAY_LISTEN=127.0.0.1:9999"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.Listen != "127.0.0.1:1234" || cfg.Log.Level != "debug" {
		t.Errorf("listen %q level %q", cfg.Gateway.Listen, cfg.Log.Level)
	}
}

// Every rejected value names the key, shows the value and says what is allowed.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		file string
		env  []string
		want []string // substrings of the error
	}{
		{"unknown key", "gateway:\n  lisen: 1.2.3.4:80\n", nil, []string{"gateway.lisen", "line 2", "did you mean listen?"}},
		{"bad duration", "gateway:\n  session:\n    idle_timeout: 30 minutes\n", nil, []string{`"30 minutes" is not a duration`, "5m"}},
		{"bad store", "gateway:\n  session:\n    store: memcached\n", nil, []string{"gateway.session.store", `"memcached"`, "cookie, bbolt, redis"}},
		{"bad alg", "issuer:\n  tokens:\n    alg: RS999\n", nil, []string{"issuer.tokens.alg", `"RS999"`, "ES512"}},
		{"symmetric id token", "issuer:\n  tokens:\n    id_token_alg: HS256\n", nil, []string{"issuer.tokens.id_token_alg", "HS256"}},
		{"bad refresh format", "issuer:\n  tokens:\n    refresh_format: opaque\n", nil, []string{"issuer.tokens.refresh_format", `"opaque"`, "sealed"}},
		{"sealed with encrypted", "issuer:\n  tokens:\n    format: encrypted\n    refresh_format: sealed\n", nil, []string{"issuer.tokens.refresh_format", "already encrypted"}},
		{"negative ttl", "issuer:\n  tokens:\n    access_ttl: -5m\n", nil, []string{"issuer.tokens.access_ttl", "line 3", "negative"}},
		{"long code", "issuer:\n  tokens:\n    code_ttl: 1h\n", nil, []string{"issuer.tokens.code_ttl", "10m"}},
		{"bad listen", "gateway:\n  listen: 8080\n", nil, []string{"gateway.listen", `"8080"`, "host:port"}},
		{"bad route", "gateway:\n  routes:\n    - prefix: api\n      upstream: ftp://x\n      policy: admin\n", nil,
			[]string{"gateway.routes[0].prefix", "gateway.routes[0].upstream", "gateway.routes[0].policy", `"admin"`}},
		{"rule does not compile", "gateway:\n  routes:\n    - prefix: /api/\n      upstream: http://127.0.0.1:9\n      allow:\n        - groups: [admins]\n        - cel: 'claims.groups.exists(g,'\n", nil,
			[]string{"gateway.routes[0].allow[1].cel", "line 7", "does not compile"}},
		{"forward auth rule does not compile", "gateway:\n  forward_auth:\n    rules:\n      - prefix: /app/\n        allow:\n          - cel: 'claims.x =='\n", nil,
			[]string{"gateway.forward_auth.rules[0].allow[0].cel", "line 6", "does not compile"}},
		{"forward auth prefix under base_path", "gateway:\n  forward_auth:\n    rules:\n      - prefix: /bff/user\n", nil,
			[]string{"gateway.forward_auth.rules[0].prefix", "line 4", "base_path"}},
		{"spa rule does not compile", "gateway:\n  spa:\n    allow: [{cel: 'nope('}]\n", nil,
			[]string{"gateway.spa.allow[0].cel", "line 3", "does not compile"}},
		{"rule names an unknown variable", "gateway:\n  routes:\n    - prefix: /api/\n      upstream: http://127.0.0.1:9\n      deny: [{cel: 'user.admin'}]\n", nil,
			[]string{"gateway.routes[0].deny[0].cel", "line 5", "undeclared reference"}},
		{"redis without url", "gateway:\n  session:\n    store: redis\n", nil, []string{"redis.url", "redis://"}},
		{"no __Host-", "gateway:\n  session:\n    cookie_name: sid\n", nil, []string{"gateway.session.cookie_name", "__Host-"}},
		{"bad cookie key", "gateway:\n  session:\n    cookie_keys: [{hash: '!!', block: '!!'}]\n", nil, []string{"cookie_keys[0].hash", "base64"}},
		{"plain password", "issuer:\n  users: [{username: a, password_hash: secret}]\n", nil, []string{"issuer.users[0].password_hash", "bffgate users hash"}},
		{"bad env value", "", []string{"BFFGATE_ISSUER_DENYLIST_CACHE_SIZE=many"}, []string{"issuer.denylist.cache_size", "BFFGATE_ISSUER_DENYLIST_CACHE_SIZE", "many"}},
		{"unknown env", "", []string{"BFFGATE_GATEWAY_LISTN=x"}, []string{"BFFGATE_GATEWAY_LISTN", "names no configuration key"}},
		{"spa both", "gateway:\n  spa: {dir: ./dist, dev_url: 'http://localhost:5173'}\n", nil, []string{"gateway.spa", "at most one"}},
		{"post logout", "gateway:\n  post_logout_redirect: https://evil.example\n", nil, []string{"gateway.post_logout_redirect", "local path"}},
		{"negative idle timeouts", "gateway:\n  spa: {dev_url: 'http://localhost:5173', dev_idle_timeout: -1s}\n  routes:\n    - {prefix: /api/, upstream: 'http://127.0.0.1:9', idle_timeout: -2s}\n", nil,
			[]string{"gateway.spa.dev_idle_timeout", "gateway.routes[0].idle_timeout", "keep-alive timeout"}},
		{"cluster database", "redis:\n  url: redis://127.0.0.1:6379/3\n  cluster_addrs: [127.0.0.1:7000]\n", nil,
			[]string{"redis.url", "redis.cluster_addrs", "only database 0", "3"}},
		{"cluster database in unix url", "redis:\n  url: unix:///run/redis.sock?db=2\n  cluster_addrs: [127.0.0.1:7000]\n", nil,
			[]string{"redis.url", "only database 0"}},
		{"unparsable redis url", "redis:\n  url: redis://127.0.0.1:6379/first\n", nil, []string{"redis.url", "host:port/db"}},
		{"prefix with a hash tag", "redis:\n  prefix: \"{bff}:\"\n", nil, []string{"redis.prefix", `"{bff}:"`, "{ or }", "one slot"}},
		{"prefix with a lone brace", "", []string{"BFFGATE_REDIS_PREFIX=app}"}, []string{"redis.prefix", `"app}"`, "{ or }"}},
		{"sentinel password without sentinels", "redis:\n  url: redis://127.0.0.1:6379/0\n  sentinel_password: s\n", nil,
			[]string{"redis.sentinel_password", "(hidden)", "redis.sentinel_addrs is not set"}},
		{"sentinel username without sentinels", "", []string{"BFFGATE_REDIS_SENTINEL_USERNAME=watcher"},
			[]string{"redis.sentinel_username", `"watcher"`, "redis.sentinel_addrs is not set"}},
		{"login throttle negative failures", "issuer:\n  login_throttle: {max_failures: -1}\n", nil, []string{"issuer.login_throttle.max_failures", "line 2", "negative"}},
		{"login throttle short lockout", "", []string{"BFFGATE_ISSUER_LOGIN_THROTTLE_LOCKOUT=10ms"}, []string{"issuer.login_throttle.lockout", "at least 1s"}},
		{"login throttle max below first", "issuer:\n  login_throttle: {lockout: 10m, max_lockout: 5m}\n", nil, []string{"issuer.login_throttle.max_lockout", "shorter than lockout"}},
		{"issuer trusted proxy not an IP", "issuer:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.300]\n", nil,
			[]string{"issuer.trusted_proxies[1]", "line 2", `"10.0.0.300"`, "neither an IP nor a CIDR"}},
		{"issuer trusted proxy bad CIDR", "", []string{"BFFGATE_ISSUER_TRUSTED_PROXIES=[10.0.0.0/33]"},
			[]string{"issuer.trusted_proxies[0]", "BFFGATE_ISSUER_TRUSTED_PROXIES", `"10.0.0.0/33"`, "not a CIDR"}},
		{"issuer trusts every address", "issuer:\n  trusted_proxies: ['::/0']\n", nil,
			[]string{"issuer.trusted_proxies[0]", `"::/0"`, "every address", "disable_ip_limit"}},
		{"gateway trusted proxy bad CIDR", "gateway:\n  trusted_proxies: [proxy.internal]\n", nil,
			[]string{"gateway.trusted_proxies[0]", `"proxy.internal"`, "want an IP"}},
		{"sentinel username without password", "redis:\n  sentinel_addrs: [127.0.0.1:26379]\n  master_name: m\n  sentinel_username: watcher\n", nil,
			[]string{"redis.sentinel_password", "redis.sentinel_username is set"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			_, err := loadConfig(path, tt.env)
			if err == nil {
				t.Fatal("want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestSecretsNeverInConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file string
		env        []string
	}{
		{"url scheme", "redis:\n  url: http://user:hunter2@host\ngateway:\n  session:\n    store: redis\n", nil},
		{"url database", "redis:\n  url: redis://user:hunter2@host:6379/x\n", nil},
		{"cluster database", "redis:\n  url: redis://user:hunter2@host:6379/5\n  cluster_addrs: [127.0.0.1:7000]\n", nil},
		{"sentinel password without sentinels", "redis:\n  sentinel_password: hunter2\n", nil},
		{"sentinel password from the environment", "", []string{"BFFGATE_REDIS_SENTINEL_PASSWORD=hunter2"}},
		// A valid sentinel password next to another key's error.
		{"sentinel password beside an error", "redis:\n  sentinel_addrs: [127.0.0.1:26379]\n  sentinel_password: hunter2\n  prefix: \"{x}\"\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
			}
			_, err := loadConfig(path, tt.env)
			if err == nil || strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error %v must reject the configuration without showing the password", err)
			}
		})
	}
}

// A Redis Cluster URL without a database, or with /0, is fine: only
// another database is refused.
func TestClusterURLDatabaseZero(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"redis://:pw@127.0.0.1:7000", "redis://127.0.0.1:7000/0", "rediss://user:pw@10.0.0.1:7000/"} {
		t.Run(u, func(t *testing.T) {
			t.Parallel()
			path := writeFile(t, "redis:\n  url: "+u+"\n  cluster_addrs: [127.0.0.1:7000, 127.0.0.1:7001]\n")
			if _, err := loadConfig(path, nil); err != nil {
				t.Fatalf("redis.url %s with redis.cluster_addrs: %v", redactURL(u), err)
			}
		})
	}
}

// The sentinel credentials come from the file or the environment and
// reach the Sentinel client's options, separate from the master's
// credentials in redis.url.
func TestSentinelCredentials(t *testing.T) {
	t.Parallel()
	const file = "redis:\n  url: redis://app:master-pw@ignored:1/2\n  sentinel_addrs: [127.0.0.1:26379, 127.0.0.1:26380]\n  master_name: mymaster\n"
	tests := []struct {
		name           string
		file           string
		env            []string
		wantUser, want string
	}{
		{"file", file + "  sentinel_username: watcher\n  sentinel_password: sentinel-pw\n", nil, "watcher", "sentinel-pw"},
		{"environment", file, []string{"BFFGATE_REDIS_SENTINEL_USERNAME=watcher", "BFFGATE_REDIS_SENTINEL_PASSWORD=sentinel-pw"}, "watcher", "sentinel-pw"},
		{"requirepass only", file, []string{"BFFGATE_REDIS_SENTINEL_PASSWORD=sentinel-pw"}, "", "sentinel-pw"},
		{"none", file, nil, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := loadConfig(writeFile(t, tt.file), tt.env)
			if err != nil {
				t.Fatal(err)
			}
			base, err := goredis.ParseURL(cfg.Redis.URL)
			if err != nil {
				t.Fatal(err)
			}
			o := failoverOptions(cfg.Redis, base)
			if o.SentinelUsername != tt.wantUser || o.SentinelPassword != tt.want {
				t.Errorf("sentinel credentials = %q / set %t, want %q / set %t", o.SentinelUsername, o.SentinelPassword != "", tt.wantUser, tt.want != "")
			}
			if o.Username != "app" || o.Password != "master-pw" || o.DB != 2 || o.MasterName != "mymaster" || len(o.SentinelAddrs) != 2 {
				t.Errorf("master options = user %q, password set %t, db %d, master %q, sentinels %v; want app, true, 2, mymaster and both sentinels",
					o.Username, o.Password != "", o.DB, o.MasterName, o.SentinelAddrs)
			}
		})
	}
}

// issuer.trusted_proxies reaches the issuer serve builds: with 127.0.0.1
// (the test's peer) listed, a failed login is logged, and counted, as the
// client X-Forwarded-For names; without it, as the peer.
func TestIssuerTrustedProxiesWired(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"trusted", []string{"BFFGATE_ISSUER_TRUSTED_PROXIES=[127.0.0.1/32]"}, "198.51.100.7"},
		{"not listed", nil, "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := loadConfig("", append([]string{"BFFGATE_DATA_DIR=" + t.TempDir(), "BFFGATE_LOG_FORMAT=json"}, tc.env...))
			if err != nil {
				t.Fatal(err)
			}
			var out lockedBuffer
			rt, err := openState(t.Context(), cfg, newLogger(cfg.Log, &out))
			if err != nil {
				t.Fatal(err)
			}
			defer rt.close()
			srv, _, err := buildIssuer(t.Context(), rt)
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			served := make(chan error, 1)
			go func() { served <- srv.App().Listener(ln) }()
			defer func() {
				if err := srv.App().Shutdown(); err != nil {
					t.Errorf("shutdown: %v", err)
				}
				if err := <-served; err != nil {
					t.Errorf("serve: %v", err)
				}
			}()
			base := "http://" + ln.Addr().String()
			jar, err := cookiejar.New(nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Jar: jar, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			do := func(req *http.Request) (int, string) {
				t.Helper()
				req.Header.Set("X-Forwarded-For", "198.51.100.7")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var b strings.Builder
				if _, err := io.Copy(&b, resp.Body); err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, b.String()
			}

			q := url.Values{
				"response_type": {"code"}, "client_id": {embeddedClientID}, "scope": {"openid"}, "state": {"s"},
				"redirect_uri":          {cfg.Gateway.PublicURL + cfg.Gateway.BasePath + "/callback"},
				"code_challenge":        {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())},
				"code_challenge_method": {"S256"},
			}
			req, _ := http.NewRequest(http.MethodGet, base+"/authorize?"+q.Encode(), nil)
			status, body := do(req)
			action := regexp.MustCompile(`<form method="post" action="([^"]*)"`).FindStringSubmatch(body)
			if status != http.StatusOK || action == nil {
				t.Fatalf("GET /authorize: status %d, want the login form:\n%s", status, body)
			}
			form := url.Values{"username": {demoUser}, "password": {"not the password"}}
			for _, f := range regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`).FindAllStringSubmatch(body, -1) {
				form.Set(html.UnescapeString(f[1]), html.UnescapeString(f[2]))
			}
			// The action is under issuer.url; this issuer listens elsewhere.
			target, err := url.Parse(html.UnescapeString(action[1]))
			if err != nil {
				t.Fatal(err)
			}
			req, _ = http.NewRequest(http.MethodPost, base+target.Path, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if status, body = do(req); status != http.StatusUnauthorized {
				t.Fatalf("POST %s with a wrong password: status %d, want 401:\n%s", target.Path, status, body)
			}

			var got []any
			for _, line := range out.lines() {
				var r map[string]any
				if json.Unmarshal([]byte(line), &r) == nil && r["msg"] == "login failed" {
					got = append(got, r["client_ip"])
				}
			}
			if len(got) != 1 || got[0] != tc.want {
				t.Errorf("login failed logged client_ip %v, want %q", got, tc.want)
			}
		})
	}
}

// bffgate.example.yaml shows every default as the packages define it: a
// default changed in a package (or here) and not in the example fails
// this test, so the two cannot drift as grace_window did (30s in cmd and
// the example, 10s in bff/tokens).
func TestExampleConfigShowsTheDefaults(t *testing.T) {
	t.Parallel()
	path := filepath.Join("..", "..", "bffgate.example.yaml")
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var root yaml.Node
	if err := yaml.Unmarshal(body, &root); err != nil {
		t.Fatal(err)
	}
	var example Config
	d := &decoder{where: func(n *yaml.Node) string { return fmt.Sprintf("line %d", n.Line) }}
	d.decode(&root, reflect.ValueOf(&example).Elem(), "", 0)
	if len(d.errs) > 0 {
		t.Fatal(errors.Join(d.errs...))
	}
	// Keys whose example shows what fill derives, not a fixed default.
	derived := map[string]bool{"issuer.enabled": true, "issuer.url": true, "gateway.enabled": true,
		"gateway.public_url": true, "demo_api.enabled": true}
	def := defaultConfig()
	defaults := map[string]reflect.Value{}
	walkKeys(reflect.ValueOf(&def).Elem(), "", func(key string, f reflect.Value) { defaults[key] = f })
	checked := 0
	walkKeys(reflect.ValueOf(&example).Elem(), "", func(key string, f reflect.Value) {
		if derived[key] || findNode(&root, key) == nil {
			return
		}
		checked++
		want := defaults[key]
		if empty(f) && empty(want) {
			return
		}
		if f.Kind() == reflect.Pointer && !f.IsNil() && !want.IsNil() {
			f, want = f.Elem(), want.Elem()
		}
		if !reflect.DeepEqual(f.Interface(), want.Interface()) {
			t.Errorf("%s: bffgate.example.yaml shows %v, the default is %v", key, f.Interface(), want.Interface())
		}
	})
	if checked < 60 {
		t.Errorf("only %d keys compared; the example should set every key to its default", checked)
	}
}

// empty is a zero value or an empty list or map.
func empty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map:
		return v.Len() == 0
	}
	return v.IsZero()
}

// The README's "Your own SPA" file loads as written (with a real hash in
// place of the placeholder), keeps a user who can log in (no start-up
// warning), and proxies the SPA and the API it names.
func TestREADMESPAConfig(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- spa-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no spa-config yaml block")
	}
	body := strings.Replace(string(m[1]), `"$argon2id$..."`, `"`+demoPasswordHash+`"`, 1)
	cfg, err := loadConfig(writeFile(t, body), nil)
	if err != nil {
		t.Fatalf("the README's SPA configuration: %v", err)
	}
	if w := startupWarnings(cfg); len(w) != 0 {
		t.Errorf("start-up warnings %q", w)
	}
	if cfg.Gateway.SPA.DevURL != "http://localhost:5173" || len(cfg.Gateway.Routes) != 1 || *cfg.DemoAPI.Enabled {
		t.Errorf("spa %+v, routes %+v, demo API %t", cfg.Gateway.SPA, cfg.Gateway.Routes, *cfg.DemoAPI.Enabled)
	}
	if users := cfg.issuerConfig("s").Users; len(users) != 1 || users[0].Username != "alice" {
		t.Errorf("issuer users %+v, want alice only (a file turns the demo user off)", users)
	}
}

// The README's Authorization example loads as written: its rules compile.
func TestREADMEAuthorizationConfig(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- authz-config:[^>]*-->\n```yaml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no authz-config yaml block")
	}
	cfg, err := loadConfig(writeFile(t, string(m[1])), nil)
	if err != nil {
		t.Fatalf("the README's authorization configuration: %v", err)
	}
	if r := cfg.Gateway.Routes; len(r) != 2 || len(r[0].Rules.Allow) != 2 || len(r[0].Rules.Deny) != 1 || r[1].Rules.ClaimsFrom != "access_token" {
		t.Errorf("routes %+v", r)
	}
}

// The zero-config SPA path: one variable, no file, keeps the demo user and
// the demo API (following the README's first command logs in as demo).
func TestSPAWithoutAFileKeepsTheDemo(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", []string{"BFFGATE_GATEWAY_SPA_DEV_URL=http://localhost:5173"})
	if err != nil {
		t.Fatal(err)
	}
	users := cfg.issuerConfig("s").Users
	if !cfg.zeroConfig || !*cfg.DemoAPI.Enabled || len(users) != 1 || users[0].Username != demoUser {
		t.Errorf("zero-config %t, demo API %t, users %+v: want the demo stack", cfg.zeroConfig, *cfg.DemoAPI.Enabled, users)
	}
	if cfg.Gateway.SPA.DevURL != "http://localhost:5173" {
		t.Errorf("dev_url %q", cfg.Gateway.SPA.DevURL)
	}
}

// Variables reach the keys that are the packages' own types (gateway.refresh
// is tokens.Config, gateway.spa spa.Config, issuer.login_throttle
// issuer.LoginThrottle, gateway.routes[] bff.Route, issuer.users[]
// issuer.User) and the package configurations built from them.
func TestEnvironmentReachesPackageTypes(t *testing.T) {
	t.Parallel()
	cfg, err := loadConfig("", []string{
		"BFFGATE_GATEWAY_REFRESH_GRACE_WINDOW=5s",
		"BFFGATE_GATEWAY_REFRESH_SKEW=1m",
		"BFFGATE_ISSUER_LOGIN_THROTTLE_WINDOW=2m",
		"BFFGATE_ISSUER_LOGIN_THROTTLE_DISABLE_IP_LIMIT=true",
		"BFFGATE_GATEWAY_PROVIDER_USE_USERINFO=true",
		"BFFGATE_GATEWAY_PROVIDER_EXTRA_AUTH_PARAMS={audience: my-api}",
		`BFFGATE_GATEWAY_ROUTES=[{prefix: /v1/, upstream: "http://127.0.0.1:7000", timeout: 5s, strip_prefix: true}]`,
		`BFFGATE_ISSUER_USERS=[{username: alice, password_hash: "` + demoPasswordHash + `"}]`,
		"BFFGATE_GATEWAY_SESSION_IDLE_TIMEOUT=10m",
	})
	if err != nil {
		t.Fatal(err)
	}
	b := cfg.gatewayConfig()
	if b.Tokens.GraceWindow != 5*time.Second || b.Tokens.Skew != time.Minute {
		t.Errorf("tokens grace %s skew %s", b.Tokens.GraceWindow, b.Tokens.Skew)
	}
	if !b.Provider.UseUserinfo || b.Provider.ExtraAuthParams["audience"] != "my-api" || b.IdleTimeout != 10*time.Minute {
		t.Errorf("provider %+v idle %s", b.Provider, b.IdleTimeout)
	}
	if len(b.Routes) != 1 || b.Routes[0].Timeout != 5*time.Second || !b.Routes[0].StripPrefix || b.Routes[0].Policy != "user" {
		t.Errorf("routes %+v", b.Routes)
	}
	is := cfg.issuerConfig("s")
	if is.LoginThrottle.Window != 2*time.Minute || !is.LoginThrottle.DisableIPLimit || is.LoginThrottle.MaxFailures != 5 {
		t.Errorf("login throttle %+v", is.LoginThrottle)
	}
	if is.Users[0].Username != "alice" {
		t.Errorf("users %+v", is.Users)
	}
}

func TestBrowsableListen(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{":48083": "127.0.0.1:48083", "0.0.0.0:8080": "127.0.0.1:8080",
		"[::]:8080": "127.0.0.1:8080", "10.0.0.5:80": "10.0.0.5:80", "[::1]:9": "[::1]:9"} {
		if got := browsable(in); got != want {
			t.Errorf("browsable(%q) = %q, want %q", in, got, want)
		}
	}
	cfg, err := loadConfig("", []string{"BFFGATE_GATEWAY_LISTEN=:48083"})
	if err != nil {
		t.Fatalf("--listen :48083: %v", err)
	}
	if cfg.Gateway.PublicURL != "http://127.0.0.1:48083" {
		t.Errorf("public_url %q", cfg.Gateway.PublicURL)
	}
}

// An empty file, or one holding only comments, is every default (with the
// demo user and API off, as for any file).
func TestEmptyConfigFile(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"", "# nothing yet\n", "---\n"} {
		cfg, err := loadConfig(writeFile(t, body), nil)
		if err != nil {
			t.Errorf("%q: %v", body, err)
			continue
		}
		if cfg.zeroConfig || *cfg.DemoAPI.Enabled {
			t.Errorf("%q: a file must turn the demo off", body)
		}
	}
}

// TestKeysAreUnique: within every section (a struct, a list's elements)
// each YAML key names one field. A key written on two fields (a tag
// copied and not renamed) would silently send a value to the wrong one.
func TestKeysAreUnique(t *testing.T) {
	t.Parallel()
	seen := map[reflect.Type]bool{}
	var check func(typ reflect.Type, path string)
	check = func(typ reflect.Type, path string) {
		for typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Map {
			typ = typ.Elem()
		}
		if typ.Kind() != reflect.Struct || seen[typ] {
			return
		}
		seen[typ] = true
		names := map[string]bool{}
		for _, k := range keysOf(typ) {
			if names[k.name] {
				t.Errorf("%s: the key %q is on two fields of %s", path, k.name, typ)
			}
			names[k.name] = true
			check(typ.FieldByIndex(k.index).Type, path+"."+k.name)
		}
	}
	check(reflect.TypeOf(Config{}), "")
	if len(seen) < 10 {
		t.Fatalf("walked only %d sections", len(seen))
	}
}

// A secret given where its section belongs (a key pasted one level too
// high, in the file or a variable) is refused under its key without
// showing it: configuration errors go to the terminal and the logs.
func TestConfigErrorsHideSecrets(t *testing.T) {
	t.Parallel()
	const secret = "c2VjcmV0S0VZdmFsdWVzZWNyZXRLRVl2YWx1ZXNlY3JldEtFWQ"
	tests := []struct {
		name, file string
		env        []string
		key        string
	}{
		{"cookie key as a list item", "gateway:\n  session:\n    cookie_keys: [" + secret + "]\n", nil, "gateway.session.cookie_keys[0]"},
		{"cookie key for the list", "gateway:\n  session:\n    cookie_keys: " + secret + "\n", nil, "gateway.session.cookie_keys"},
		{"client secret as a client", "issuer:\n  clients: [" + secret + "]\n", nil, "issuer.clients[0]"},
		{"client secret for the provider", "gateway:\n  provider: " + secret + "\n", nil, "gateway.provider"},
		{"cookie key in a variable", "", []string{"BFFGATE_GATEWAY_SESSION_COOKIE_KEYS=[\"" + secret + "\"]"}, "gateway.session.cookie_keys[0]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			_, err := loadConfig(path, tc.env)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Errorf("error does not name %s: %v", tc.key, err)
			}
			if strings.Contains(err.Error(), secret[:8]) {
				t.Errorf("error shows the secret: %v", err)
			}
		})
	}
}
