package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// runCmd runs the CLI in-process and returns its exit code and output.
func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errb, []string{"BFFGATE_LOG_LEVEL=warn"})
	return code, out.String(), errb.String()
}

func TestUsersHash(t *testing.T) {
	t.Parallel()
	code, out, errOut := runCmd(t, "s3cret pass\n", "users", "hash")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(out, "$argon2id$") || strings.Contains(out, "s3cret") {
		t.Fatalf("hash = %q, want an argon2id PHC string without the password", out)
	}
	code, _, errOut = runCmd(t, "", "users", "hash")
	if code != 1 || !strings.Contains(errOut, "no password on stdin") {
		t.Fatalf("empty stdin: exit %d, %q", code, errOut)
	}
}

func TestKeysRotate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	kid := regexp.MustCompile(`new active ES256 key (\S+);`)
	var kids []string
	for range 2 {
		code, out, errOut := runCmd(t, "", "keys", "rotate", "--alg", "ES256", "--data-dir", dir)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		m := kid.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("output %q names no new key", out)
		}
		kids = append(kids, m[1])
	}
	if kids[0] == kids[1] {
		t.Fatalf("two rotations made the same key %s", kids[0])
	}
	code, _, errOut := runCmd(t, "", "keys", "rotate", "--alg", "none", "--data-dir", dir)
	if code != 1 || !strings.Contains(errOut, "none") {
		t.Fatalf("alg none: exit %d, %q", code, errOut)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "gateway:\n  provider:\n    issuer_url: https://id.example.com\n    client_id: app\n    client_secret: s\n  public_url: https://app.example.com\n")
	code, out, errOut := runCmd(t, "", "config", "check", "--config", good)
	if code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("good config: exit %d, %q %q", code, out, errOut)
	}
	bad := writeFile(t, "issuer:\n  tokens:\n    access_ttl: 5 minutes\n")
	code, _, errOut = runCmd(t, "", "config", "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, "access_ttl") || !strings.Contains(errOut, "5 minutes") {
		t.Fatalf("bad duration: exit %d, %q", code, errOut)
	}
}

func TestRedisURLErrorHidesPassword(t *testing.T) {
	t.Parallel()
	_, err := newRedis(Redis{URL: "redis://user:hunter2@[::1:6379/0"})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "redis.url") {
		t.Fatalf("err = %v, want a redis.url error without the password", err)
	}
}

// `bffgate config check` neither prints the sentinel password of a valid
// configuration nor quotes it in the errors of an invalid one.
func TestConfigCheckHidesSentinelPassword(t *testing.T) {
	t.Parallel()
	const redis = "redis:\n  sentinel_addrs: [127.0.0.1:26379]\n  master_name: mymaster\n  sentinel_password: hunter2\n"
	good := writeFile(t, redis+"gateway:\n  session:\n    store: redis\n")
	code, out, errOut := runCmd(t, "", "config", "check", "--config", good)
	if code != 0 || !strings.Contains(out, "configuration is valid") {
		t.Fatalf("valid Sentinel configuration: exit %d, %q %q", code, out, errOut)
	}
	if strings.Contains(out+errOut, "hunter2") {
		t.Fatalf("config check printed the sentinel password: %q %q", out, errOut)
	}
	bad := writeFile(t, redis+"  url: redis://:hunter2@127.0.0.1:6379/db\n  prefix: \"{bff}\"\n")
	code, out, errOut = runCmd(t, "", "config", "check", "--config", bad)
	if code != 1 || !strings.Contains(errOut, "redis.url") || !strings.Contains(errOut, "redis.prefix") {
		t.Fatalf("invalid Sentinel configuration: exit %d, %q", code, errOut)
	}
	if strings.Contains(out+errOut, "hunter2") {
		t.Fatalf("config check quoted a password: %q %q", out, errOut)
	}
}

// config check refuses what start-up refuses (it used to pass a plain-http
// public URL and a missing spa.dir, which serve then refused), because
// both run the one validation in loadConfig.
func TestConfigCheckRefusesWhatStartRefuses(t *testing.T) {
	t.Parallel()
	for _, file := range []string{"unsafe.yaml", "spa-dir.yaml"} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			path := "testdata/config/" + file
			code, _, errCheck := runCmd(t, "", "config", "check", "--config", path)
			if code != 1 {
				t.Fatalf("config check: exit %d, want 1: %s", code, errCheck)
			}
			code, _, errServe := runCmd(t, "", "serve", "--config", path, "--data-dir", t.TempDir())
			if code != 1 {
				t.Fatalf("serve: exit %d, want 1: %s", code, errServe)
			}
			if errCheck != errServe {
				t.Errorf("config check and serve disagree:\ncheck: %s\nserve: %s", errCheck, errServe)
			}
		})
	}
}
