package topology

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/bffgate/bffgate/e2e/stack"
)

// readyWait bounds every wait for a Redis process or topology to come up
// or to change; it is a guard against hanging, not a speed requirement.
const readyWait = 30 * time.Second

// binaries returns the paths of redis-server and redis-cli. Without them
// the test is skipped, unless BFFGATE_TEST_REDIS_URL is set: CI installs
// Redis, so a missing binary there is a broken setup and fails the test.
func binaries(t *testing.T) (server, cli string) {
	t.Helper()
	missing := func(what string) {
		msg := what + ": the Sentinel and Cluster tests run Redis processes of their own (apt-get install redis-server, Redis 7.0 or later)"
		if os.Getenv("BFFGATE_TEST_REDIS_URL") != "" {
			t.Fatal(msg + "; BFFGATE_TEST_REDIS_URL is set, so Redis is expected to be installed")
		}
		t.Skip(msg)
	}
	server, err := exec.LookPath("redis-server")
	if err != nil {
		missing("redis-server is not installed")
	}
	cli, err = exec.LookPath("redis-cli")
	if err != nil {
		missing("redis-cli is not installed")
	}
	out, err := exec.Command(server, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", server, err)
	}
	// "Redis server v=7.0.15 sha=..."; 7.0 brings cluster-port, which the
	// cluster needs, and PEXPIREAT ... GT, which the stores need.
	m := regexp.MustCompile(`v=(\d+)\.`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("%s --version printed %q: cannot tell the Redis version", server, out)
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 7 {
		missing(fmt.Sprintf("%s is Redis %s, older than 7.0", server, strings.TrimSpace(string(out))))
	}
	return server, cli
}

// proc is one redis-server process (a data node or a sentinel) on a
// loopback port, stopped by the test's cleanup.
type proc struct {
	t        *testing.T
	name     string
	addr     string // 127.0.0.1:port
	port     int
	password string // its requirepass, "" for none
	dir      string
	log      string // its stdout and stderr
	cmd      *exec.Cmd
	done     chan struct{}
}

// errPortTaken means the process could not bind a port that was free a
// moment before (another test took it): start again on another one.
var errPortTaken = errors.New("port taken")

// startProc runs redis-server with the arguments args returns for a free
// port (and a second free port, for a cluster bus) and waits until it
// answers. password is the requirepass args configure ("" for none): the
// readiness check and client authenticate with it. A port taken between
// its choice and the bind is retried on new ports.
func startProc(t *testing.T, name, bin, password string, args func(dir string, port, port2 int) []string) *proc {
	t.Helper()
	var last error
	for range 5 {
		// A fresh directory per attempt: a failed start may leave files.
		dir := t.TempDir()
		p := &proc{t: t, name: name, dir: dir, port: stack.FreePort(t), password: password, log: filepath.Join(dir, "redis.log")}
		p.addr = "127.0.0.1:" + strconv.Itoa(p.port)
		err := p.run(bin, args(dir, p.port, stack.FreePort(t)))
		if err == nil {
			t.Cleanup(p.stop)
			return p
		}
		last = err
		if err != errPortTaken {
			break
		}
	}
	t.Fatalf("start %s: %v", name, last)
	return nil
}

func (p *proc) run(bin string, args []string) error {
	logf, err := os.Create(p.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = p.dir
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	setPdeathsig(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return err
	}
	p.done = make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	rdb := goredis.NewClient(&goredis.Options{Addr: p.addr, Password: p.password, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	deadline := time.Now().Add(readyWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		// INFO server rather than PING: the answer must come from this
		// process, not from another test's server that took the port
		// first (this one then exits with "Address already in use").
		info, err := rdb.Info(ctx, "server").Result()
		cancel()
		if err == nil && strings.Contains(info, "process_id:"+strconv.Itoa(p.cmd.Process.Pid)+"\r\n") {
			return nil
		}
		if err == nil {
			err = errors.New("another process answers on the port")
		}
		select {
		case <-p.done:
			out := p.logs()
			if strings.Contains(out, "Address already in use") {
				return errPortTaken
			}
			return fmt.Errorf("%s exited (%v); its log:\n%s", p.name, p.cmd.ProcessState, out)
		default:
		}
		if time.Now().After(deadline) {
			p.stop()
			return fmt.Errorf("%s on %s did not answer INFO within %s (%v); its log:\n%s", p.name, p.addr, readyWait, err, p.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) logs() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// stop ends the process: SIGTERM (no persistence is configured, so it
// exits at once), SIGKILL after 10 s. On a failed test it logs the
// process's output.
func (p *proc) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if p.t.Failed() {
		p.t.Logf("%s (%s) log:\n%s", p.name, p.addr, p.logs())
	}
}

// client returns a plain client on this one process.
func (p *proc) client(t *testing.T) *goredis.Client {
	c := goredis.NewClient(&goredis.Options{Addr: p.addr, Password: p.password})
	t.Cleanup(func() { c.Close() })
	return c
}

// dataNodeArgs are the arguments every data node gets: loopback only, no
// persistence, its files in dir.
func dataNodeArgs(dir string, port int) []string {
	return []string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
}

// waitFor polls cond every 20 ms until it reports true, failing the test
// with what after readyWait. cond's error, if any, is the last reason.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(readyWait)
	for {
		ok, err := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (last: %v)", what, readyWait, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// randomPrefix is a key prefix of one test's own, so that tests sharing a
// topology never see each other's keys.
func randomPrefix(name string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "topology-" + name + "-" + hex.EncodeToString(b) + ":"
}

// --- Redis Cluster ---

// cluster is three Redis Cluster masters without replicas.
type cluster struct {
	nodes []*proc
	addrs []string
}

// startCluster runs three cluster-enabled redis-servers (each with its bus
// on a port of its own: cluster-port, so that no port+10000 needs to be
// free), joins them with redis-cli --cluster create and waits until every
// node reports cluster_state:ok and knows all three slot ranges.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	server, cli := binaries(t)
	c := &cluster{}
	for i := range 3 {
		n := startProc(t, fmt.Sprintf("cluster node %d", i+1), server, "", func(dir string, port, bus int) []string {
			return append(dataNodeArgs(dir, port),
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-port", strconv.Itoa(bus),
				"--cluster-node-timeout", "5000")
		})
		c.nodes = append(c.nodes, n)
		c.addrs = append(c.addrs, n.addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyWait)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, n := range c.nodes {
		rdb := n.client(t)
		waitFor(t, "cluster node "+n.addr+" reports cluster_state:ok and three slot ranges", func() (bool, error) {
			info, err := rdb.ClusterInfo(context.Background()).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false, fmt.Errorf("CLUSTER INFO: %v %q", err, firstLine(info))
			}
			slots, err := rdb.ClusterSlots(context.Background()).Result()
			if err != nil || len(slots) != 3 {
				return false, fmt.Errorf("CLUSTER SLOTS: %v, %d ranges", err, len(slots))
			}
			return true, nil
		})
	}
	return c
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(l)
}

// client returns a ClusterClient as bffgate's newRedis builds it from
// redis.cluster_addrs, closed at the end of the test.
func (c *cluster) client(t *testing.T) *goredis.ClusterClient {
	t.Helper()
	rdb := goredis.NewClusterClient(&goredis.ClusterOptions{Addrs: c.addrs})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// yaml is the redis section of a bffgate configuration for this cluster.
func (c *cluster) yaml(prefix string) string {
	return fmt.Sprintf("redis:\n  prefix: %q\n  cluster_addrs: [%s]\n", prefix, quoteList(c.addrs))
}

func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// --- Redis Sentinel ---

// masterName is the name under which the sentinel monitors the master.
const masterName = "bffgate-topology"

// sentinelSetup is a master, a replica of it, and one sentinel monitoring
// them with quorum 1 (so that SENTINEL FAILOVER needs no other sentinel).
// The sentinel requires a password of its own (requirepass), which
// bffgate gives with redis.sentinel_password; the data nodes require none.
type sentinelSetup struct {
	master, replica, sentinel *proc
}

// startSentinel runs the master, the replica, waits until the master sees
// the replica online, then the sentinel, and waits until the sentinel
// knows both (a failover needs a replica the sentinel has seen).
func startSentinel(t *testing.T) *sentinelSetup {
	t.Helper()
	server, _ := binaries(t)
	s := &sentinelSetup{}
	s.master = startProc(t, "sentinel's master", server, "", func(dir string, port, _ int) []string {
		return dataNodeArgs(dir, port)
	})
	s.replica = startProc(t, "sentinel's replica", server, "", func(dir string, port, _ int) []string {
		return append(dataNodeArgs(dir, port), "--replicaof", "127.0.0.1", strconv.Itoa(s.master.port))
	})
	master := s.master.client(t)
	waitFor(t, "the master reports its replica online", func() (bool, error) {
		info, err := master.Info(context.Background(), "replication").Result()
		want := fmt.Sprintf("port=%d,state=online", s.replica.port)
		return err == nil && strings.Contains(info, want), fmt.Errorf("INFO replication: %v %q", err, info)
	})
	password := "topology-sentinel-" + rand.Text()
	s.sentinel = startProc(t, "sentinel", server, password, func(dir string, port, _ int) []string {
		// The sentinel rewrites its configuration file (it must be
		// writable). down-after-milliseconds stays long so that a busy
		// machine never triggers a failover of its own; the test's
		// failover is requested, which needs no agreement. requirepass
		// is for the sentinel's clients; the sentinel itself reaches the
		// master and replica without one.
		conf := fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
requirepass %s
sentinel monitor %s 127.0.0.1 %d 1
sentinel down-after-milliseconds %s 60000
sentinel failover-timeout %s 60000
`, port, dir, password, masterName, s.master.port, masterName, masterName)
		path := filepath.Join(dir, "sentinel.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		return []string{path, "--sentinel"}
	})
	sc := s.sentinelClient(t)
	waitFor(t, "the sentinel knows the master and its replica", func() (bool, error) {
		ctx := context.Background()
		addr, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		if err != nil || len(addr) != 2 || addr[1] != strconv.Itoa(s.master.port) {
			return false, fmt.Errorf("SENTINEL GET-MASTER-ADDR-BY-NAME: %v %v", err, addr)
		}
		replicas, err := sc.Replicas(ctx, masterName).Result()
		if err != nil {
			return false, err
		}
		for _, r := range replicas {
			if r["port"] == strconv.Itoa(s.replica.port) && r["flags"] == "slave" && r["master-link-status"] == "ok" {
				return true, nil
			}
		}
		return false, fmt.Errorf("SENTINEL REPLICAS: %v", replicas)
	})
	// Without its password the sentinel must refuse: else a client that
	// ignored redis.sentinel_password would pass unnoticed.
	anon := goredis.NewSentinelClient(&goredis.Options{Addr: s.sentinel.addr, MaxRetries: -1})
	defer anon.Close()
	if _, err := anon.GetMasterAddrByName(context.Background(), masterName).Result(); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("SENTINEL GET-MASTER-ADDR-BY-NAME without the password: %v; want a NOAUTH error (requirepass in sentinel.conf)", err)
	}
	return s
}

// sentinelClient returns a client of the sentinel itself, authenticated.
func (s *sentinelSetup) sentinelClient(t *testing.T) *goredis.SentinelClient {
	sc := goredis.NewSentinelClient(&goredis.Options{Addr: s.sentinel.addr, Password: s.sentinel.password})
	t.Cleanup(func() { sc.Close() })
	return sc
}

// client returns a FailoverClient as bffgate's newRedis builds it from
// redis.sentinel_addrs, redis.master_name and redis.sentinel_password,
// closed at the end of the test.
func (s *sentinelSetup) client(t *testing.T) *goredis.Client {
	t.Helper()
	rdb := goredis.NewFailoverClient(&goredis.FailoverOptions{MasterName: masterName, SentinelAddrs: []string{s.sentinel.addr},
		SentinelPassword: s.sentinel.password})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// yaml is the redis section of a bffgate configuration for this setup.
func (s *sentinelSetup) yaml(prefix string) string {
	return fmt.Sprintf("redis:\n  prefix: %q\n  sentinel_addrs: [%q]\n  master_name: %q\n  sentinel_password: %q\n",
		prefix, s.sentinel.addr, masterName, s.sentinel.password)
}

// waitReplicated waits until the replica has every write the master took
// so far: a marker written on one connection, then WAIT on that same
// connection (replication is in order, so the writes of every other
// connection before the marker are on the replica too).
func (s *sentinelSetup) waitReplicated(t *testing.T, master *proc) {
	t.Helper()
	ctx := context.Background()
	conn := master.client(t).Conn()
	defer conn.Close()
	if err := conn.Set(ctx, "topology:replication-marker", time.Now().UnixNano(), 0).Err(); err != nil {
		t.Fatalf("SET on the master %s: %v", master.addr, err)
	}
	n, err := conn.Do(ctx, "wait", 1, readyWait.Milliseconds()).Int64()
	if err != nil || n < 1 {
		t.Fatalf("WAIT 1 on the master %s: %d replicas acknowledged (%v), want 1", master.addr, n, err)
	}
}

// failover asks the sentinel to promote the replica, waits until it names
// the replica as the master, and turns the old master into a replica of
// the new one. The sentinel does that itself after its next INFO round to
// the old master and a grace period (ten seconds or more); doing it here
// at once keeps the test short and closes the window in which two masters
// take writes. It returns the new master.
func (s *sentinelSetup) failover(t *testing.T, sc *goredis.SentinelClient) *proc {
	t.Helper()
	ctx := context.Background()
	oldMaster, promoted := s.master, s.replica
	if err := sc.Failover(ctx, masterName).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER %s: %v", masterName, err)
	}
	waitFor(t, "the sentinel names the promoted replica as the master", func() (bool, error) {
		addr, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(promoted.port), fmt.Errorf("%v %v", err, addr)
	})
	pc, oc := promoted.client(t), oldMaster.client(t)
	waitFor(t, "the promoted replica reports role master", func() (bool, error) {
		role, err := pc.Do(ctx, "role").Slice()
		return err == nil && len(role) > 0 && role[0] == "master", fmt.Errorf("ROLE: %v %v", err, role)
	})
	if err := oc.ReplicaOf(ctx, "127.0.0.1", strconv.Itoa(promoted.port)).Err(); err != nil {
		t.Fatalf("REPLICAOF on the old master %s: %v", oldMaster.addr, err)
	}
	waitFor(t, "the old master reports role slave, its link to the new master up", func() (bool, error) {
		info, err := oc.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up"), fmt.Errorf("INFO replication: %v %q", err, info)
	})
	s.master, s.replica = promoted, oldMaster
	return promoted
}
