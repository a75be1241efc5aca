package agents

import (
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bffgate/bffgate/e2e/stack"
)

// TestAgentsDisableLive: with bffgate running on the data file (bbolt,
// which it holds), `bffgate agents disable` goes through the admin socket
// of the data directory: the running process refuses the agent's live
// token at introspection right after the command returns and refuses new
// grants; enable lets it get tokens again. The socket is gone after a
// graceful stop, and the one a kill -9 leaves behind does not stop the
// next start.
func TestAgentsDisableLive(t *testing.T) {
	w := newWorld(t)
	sock := filepath.Join(w.st.DataDir, "admin.sock")
	mint := func() reply {
		return w.postAssertion(t, "/token", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), ccForm)
	}
	introspect := func(tok string) reply {
		return w.postAssertion(t, "/introspect", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), url.Values{"token": {tok}})
	}
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatalf("no admin socket while bffgate runs: %v", err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin socket mode %v, want a socket with 0600", fi.Mode())
	}

	r := mint()
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	old := r.str("access_token")
	if in := introspect(old); in.body["active"] != true {
		t.Fatalf("the agent's token before the disable: %s", in.raw)
	}
	out, err := w.bffgate(t, "agents", "disable", agentID)
	if err != nil || !strings.Contains(out, "disabled") || !strings.Contains(out, "running on data directory") {
		t.Fatalf("bffgate agents disable while bffgate runs: %v\n%s", err, out)
	}
	// The running process made the change itself: bounded poll, though
	// the first introspection is expected to refuse already.
	deadline := time.Now().Add(5 * time.Second)
	for {
		in := introspect(old)
		if in.status == 200 && in.body["active"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the disabled agent's live token still introspects: %d %s", in.status, in.raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := mint(); r.status != 400 || r.str("error") != "unauthorized_client" {
		t.Fatalf("grant of a disabled agent: %d %s", r.status, r.raw)
	}
	if out, err := w.bffgate(t, "agents", "disable", "no-such-agent"); err == nil || !strings.Contains(out, "no client") {
		t.Fatalf("disable of an unknown client: %v\n%s", err, out)
	}

	time.Sleep(1100 * time.Millisecond) // iat has whole seconds: the next token must be of a later second than the disable
	if out, err := w.bffgate(t, "agents", "enable", agentID); err != nil || !strings.Contains(out, "enabled") {
		t.Fatalf("bffgate agents enable while bffgate runs: %v\n%s", err, out)
	}
	r = mint()
	if r.status != 200 {
		t.Fatalf("grant after enable: %d %s", r.status, r.raw)
	}
	if in := introspect(r.str("access_token")); in.body["active"] != true {
		t.Fatalf("a new token after enable: %s", in.raw)
	}
	if in := introspect(old); in.body["active"] != false {
		t.Fatalf("the token of before the disable after enable: %s; want it still revoked", in.raw)
	}

	w.st.Stop()
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Fatalf("the admin socket is still there after a graceful stop (%v)", err)
	}
	// The running process wrote the operator's actions in its audit
	// chain, naming the command, and the chain verifies.
	b, _ := os.ReadFile(w.auditFile)
	for _, reason := range []string{"bffgate agents disable (admin socket)", "bffgate agents enable (admin socket)"} {
		if !strings.Contains(string(b), reason) {
			t.Errorf("the audit file has no record naming %q:\n%s", reason, b)
		}
	}
	if out, err := w.bffgate(t, "audit", "verify"); err != nil {
		t.Fatalf("bffgate audit verify: %v\n%s", err, out)
	}

	// A crash leaves the socket file; the next start replaces it.
	w.st.Restart()
	w.st.Kill()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("kill -9 removed the socket? %v", err)
	}
	// Nothing answers on the stale socket: the command works on the
	// store itself, as with bffgate stopped.
	if out, err := w.bffgate(t, "agents", "disable", mailerID); err != nil || strings.Contains(out, "running on data directory") {
		t.Fatalf("bffgate agents disable with a stale socket and no bffgate: %v\n%s", err, out)
	}
	w.st.Restart()
	if len(w.st.LogLines("stale admin socket")) == 0 {
		t.Errorf("the start did not say it replaced the stale admin socket:\n%s", w.st.Logs())
	}
	if out, err := w.bffgate(t, "agents", "enable", mailerID); err != nil || !strings.Contains(out, "running on data directory") {
		t.Fatalf("bffgate agents enable through the new socket: %v\n%s", err, out)
	}
}

// TestAgentDisableLiveOnRedis: two instances on Redis; the command runs on
// A's data directory, so A makes the change through its admin socket and
// refuses the token at once, B learns it from the store (its change log
// and pub/sub) and refuses it too; A's audit chain names the command, B's
// records the change it learned.
func TestAgentDisableLiveOnRedis(t *testing.T) {
	redisURL, prefix := sharedRedis(t)
	w := prepareWorld(t, "BFFGATE_REDIS_URL="+redisURL, "BFFGATE_REDIS_PREFIX="+prefix, "BFFGATE_ISSUER_STORE=redis", "BFFGATE_LOG_ACCESS=false")
	a := stack.Start(t, stack.Options{NoGateway: true, Env: w.env})
	auditB := filepath.Join(t.TempDir(), "audit-b.log")
	b := stack.Start(t, stack.Options{NoGateway: true, Env: append(w.env[:len(w.env):len(w.env)],
		"BFFGATE_ISSUER_URL="+a.IssuerURL, "BFFGATE_ISSUER_AUDIT_FILE="+auditB)})
	w.st = a
	activeAt := func(base, tok string) bool {
		r := postAssertionTo(t, base, "/introspect", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), url.Values{"token": {tok}})
		if r.status != 200 {
			t.Fatalf("introspection at %s: %d %s", base, r.status, r.raw)
		}
		return r.body["active"] == true
	}
	r := postAssertionTo(t, a.IssuerURL, "/token", agentID, assertionJWT, w.agentKey.sign(t, w.claims(agentID)), ccForm)
	if r.status != 200 {
		t.Fatalf("grant at A: %d %s", r.status, r.raw)
	}
	tok := r.str("access_token")
	if !activeAt(b.IssuerURL, tok) {
		t.Fatal("A's token is not active at B")
	}
	out, err := w.bffgate(t, "agents", "disable", agentID)
	if err != nil || !strings.Contains(out, "running on data directory") {
		t.Fatalf("bffgate agents disable on A's data directory: %v\n%s", err, out)
	}
	if activeAt(a.IssuerURL, tok) {
		t.Fatal("A, which made the change, answers active for the disabled agent's token")
	}
	for deadline := time.Now().Add(5 * time.Second); activeAt(b.IssuerURL, tok); {
		if time.Now().After(deadline) {
			t.Fatal("B still answers active for the disabled agent's token 5s after the disable")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.Stop()
	b.Stop()
	ra, _ := os.ReadFile(w.auditFile)
	rb, _ := os.ReadFile(auditB)
	if !strings.Contains(string(ra), "bffgate agents disable (admin socket)") {
		t.Errorf("A's audit file has no agent_disable record naming the admin socket:\n%s", ra)
	}
	if !strings.Contains(string(rb), `"action":"agent_disable"`) {
		t.Errorf("B's audit file has no agent_disable record:\n%s", rb)
	}
}

// TestAgentsDisableNoSocket: a data directory whose path is too long for
// a Unix socket runs without the admin socket, says so at start, and the
// command, finding the data file held, says what is missing.
func TestAgentsDisableNoSocket(t *testing.T) {
	w := prepareWorld(t)
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 110))
	w.st = stack.Start(t, stack.Options{NoGateway: true, Env: w.env, DataDir: dir})
	if len(w.st.LogLines("no admin socket")) == 0 {
		t.Errorf("the start did not say it runs without the admin socket:\n%s", w.st.Logs())
	}
	out, err := w.bffgate(t, "agents", "disable", agentID)
	if err == nil || !strings.Contains(out, "has no admin socket") || !strings.Contains(out, "shorter data_dir") {
		t.Fatalf("disable with bffgate running without its socket: %v\n%s", err, out)
	}
	t.Logf("the command said: %s", out)
}
