package frontends

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/browser"
	"github.com/bffgate/bffgate/e2e/stack"
)

// reloadLimit bounds how long a reload may take to show: bffgate reads
// the file and discovers the new frontend's provider on loopback.
const reloadLimit = 30 * time.Second

// TestReload edits the file and sends SIGHUP, on the bbolt and Redis
// stores: a third frontend comes while the first two keep their sessions;
// a changed frontend keeps its sessions and serves them with its new
// settings; a removed frontend's session gets 401 frontend_removed while
// the others live on; a file with a mistake keeps the running frontends.
func TestReload(t *testing.T) {
	for _, store := range []string{"bbolt", "redis"} {
		t.Run(store, func(t *testing.T) { runReload(t, store) })
	}
}

func runReload(t *testing.T, store string) {
	port := stack.FreePort(t)
	fs := fourFrontends(port)
	a, b, c := fs[0], fs[1], thirdFrontend(port)
	e := startEnv(t, store, []frontend{a, b}, []frontend{a, b, c})
	ctx := testContext(t)
	ag := newAgent(t)
	br := browser.New(t)

	e.signIn(t, br, a, "alice")
	e.signIn(t, br, b, "bob")
	cookies := map[string]map[string]string{"a": sessionCookies(t, br, a), "b": sessionCookies(t, br, b)}
	user := func(f frontend) response {
		t.Helper()
		return ag.get(ctx, f.url("/bff/user?slide=false"), withCookies(cookies[f.Name]))
	}
	wantLive := func(f frontend, sub, when string) {
		t.Helper()
		if r := user(f); r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"value":"`+sub+`"`) {
			t.Errorf("%s: %s's session of %s answered %s, want 200", when, f.Name, sub, r)
		}
		if r := ag.get(ctx, f.url("/api/whoami"), withCookies(cookies[f.Name])); r.Status != http.StatusOK {
			t.Errorf("%s: %s's API for %s answered %s, want 200", when, f.Name, sub, r)
		}
	}
	if r := ag.get(ctx, c.url("/bff/login"), nil); r.Status != http.StatusNotFound || r.errorCode() != "no_frontend" {
		t.Fatalf("c before the reload: %s, want 404 no_frontend", r)
	}

	t.Log("reload adding c")
	e.reload([]frontend{a, b, c})
	added := eventually(reloadLimit, func() bool {
		r := ag.get(ctx, c.url("/bff/login?returnUrl=/"), nil)
		return r.Status == http.StatusFound && strings.HasPrefix(r.Header.Get("Location"), e.oidc+"/")
	})
	if !added {
		t.Fatalf("c's /bff/login does not redirect to its provider %s after the reload:\n%s", reloadLimit, e.st.Logs())
	}
	wantLive(a, "alice", "after adding c")
	wantLive(b, "bob", "after adding c")
	// bob again: oidc-provider ends an account's sessions at every
	// client by back-channel logout when another account signs in in the
	// same browser.
	e.signIn(t, br, c, "bob")
	e.wantAPI(t, br, c, "bob")
	cookies["c"] = sessionCookies(t, br, c)
	e.wantSignedIn(t, br, a, "alice")
	e.wantAPI(t, br, a, "alice")
	e.wantSignedIn(t, br, b, "bob")
	e.wantAPI(t, br, b, "bob")
	wantReloads(t, e, "ok", 1)

	t.Log("reload changing a's route: a's session lives on and reaches the API through the new route")
	a2 := a
	a2.APITag = "a-v2"
	e.reload([]frontend{a2, b, c})
	var last response
	changed := eventually(reloadLimit, func() bool {
		last = ag.get(ctx, a.url("/api/whoami"), withCookies(cookies["a"]))
		var got echoed
		return last.Status == http.StatusOK && json.Unmarshal(last.Body, &got) == nil && got.Frontend == "a-v2" && got.Sub == "alice"
	})
	if !changed {
		t.Fatalf("a's API call with a's session after a's route changed: %s, want 200 through the new route (frontend a-v2) for alice", last)
	}
	wantLive(a, "alice", "after changing a")
	wantLive(b, "bob", "after changing a")
	wantLive(c, "bob", "after changing a")
	wantReloads(t, e, "ok", 2)

	t.Log("reload removing b")
	e.reload([]frontend{a2, c})
	removed := eventually(reloadLimit, func() bool {
		r := user(b)
		return r.Status == http.StatusUnauthorized && r.errorCode() == "frontend_removed"
	})
	if !removed {
		t.Fatalf("b's session after b was removed: %s, want 401 frontend_removed", user(b))
	}
	if r := ag.get(ctx, b.url("/api/whoami"), withCookies(cookies["b"])); r.Status != http.StatusUnauthorized {
		t.Errorf("b's API after b was removed: %s, want 401", r)
	}
	// Its server-side sessions are deleted in the background: the one
	// session, on either store.
	purgedLine := []string{"frontend removed: its sessions are deleted", `"frontend":"b"`, `"sessions":1`}
	purged := eventually(reloadLimit, func() bool { return len(e.st.LogLines(purgedLine...)) == 1 })
	if !purged {
		t.Errorf("no log line %q about b:\n%s", purgedLine, strings.Join(e.st.LogLines(`"frontend":"b"`), "\n"))
	}
	if store == "redis" {
		// b's namespace (session:fe:b:) is empty; a's still holds alice's.
		if n := e.redisKeys(ctx, "session:fe:b:"); n != 0 {
			t.Errorf("%d Redis keys of b's sessions remain after b was removed", n)
		}
		if n := e.redisKeys(ctx, "session:fe:a:"); n == 0 {
			t.Errorf("no Redis key under session:fe:a: (the check above would prove nothing)")
		}
	}
	wantLive(a, "alice", "after removing b")
	wantLive(c, "bob", "after removing b")
	wantReloads(t, e, "ok", 3)

	t.Log("a file with a mistake (a frontend named twice) keeps the running frontends")
	e.writeConfig(e.yaml([]frontend{a2, c, a2}))
	e.fronts = []frontend{a2, c}
	refused := eventually(reloadLimit, func() bool {
		return len(e.st.LogLines("gateway.frontends[2]")) > 0
	})
	if !refused {
		t.Errorf("no log line names gateway.frontends[2] (the second frontend named a) after the reload of a bad file")
	}
	wantReloads(t, e, "error", 1)
	wantLive(a, "alice", "after a bad reload")
	wantLive(c, "bob", "after a bad reload")
	if r := ag.get(ctx, b.url("/bff/user?slide=false"), withCookies(cookies["b"])); r.Status != http.StatusUnauthorized {
		t.Errorf("b's session after the bad reload: %s, want 401 (b stays removed)", r)
	}
}

// wantReloads waits until /metrics counts n reloads with result (the
// counter moves once the reload is done, which may be a moment after its
// effect is visible), and fails if it never does.
func wantReloads(t *testing.T, e *env, result string, n int) {
	t.Helper()
	ag := newAgent(t)
	ctx := testContext(t)
	re := regexp.MustCompile(`(?m)^bffgate_config_reloads_total\{[^}]*result="` + result + `"[^}]*\} (\d+)`)
	got := -1
	ok := eventually(reloadLimit, func() bool {
		r := ag.get(ctx, fmt.Sprintf("http://127.0.0.1:%d/metrics", e.gwPort), nil)
		if m := re.FindSubmatch(r.Body); m != nil {
			got, _ = strconv.Atoi(string(m[1]))
		}
		return got >= n
	})
	if !ok || got != n {
		t.Errorf("bffgate_config_reloads_total{result=%q} = %d, want %d (-1: not in /metrics)", result, got, n)
	}
}
