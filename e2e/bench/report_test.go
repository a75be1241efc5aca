package bench

import (
	"fmt"
	"runtime"
	"strings"
	"time"
)

// FullRunCommand is the command of the full (quiet) run that writes
// e2e/bench/RESULTS.md, as doc.go and the README give it.
const FullRunCommand = "BFFGATE_BENCH=1 BFFGATE_TEST_REDIS_URL=redis://127.0.0.1:6379/0 go test -run TestLoadBenchmark -count=1 -timeout 60m -v ./e2e/bench/"

// report is everything RESULTS.md shows.
type report struct {
	Started                   time.Time
	Duration, RefreshDuration time.Duration
	Table                     []Row // GET rows, then the issuer's rows
	Post                      []Row
	Memory                    []Row // 256 connections
	Refresh                   []refreshResult
	Login                     []loginResult
	Soak                      []soakResult
	SoakDuration              time.Duration
	SoakRate                  int
	Scale                     []Row
	Redis                     bool
	Quick                     bool
	Profiles                  map[string]string
	ProfileDir                string
	LoadBefore, LoadAfter     string
	Versions                  map[string]string
	// History is HISTORY.md, the hand-kept record of profile-driven fixes
	// and their before-and-after figures, appended to every RESULTS.md.
	History string
}

func (rep report) write(b *strings.Builder) {
	fmt.Fprintf(b, "# bffgate load benchmark results\n\n")
	if rep.Quick {
		b.WriteString("**A quick run (BFFGATE_BENCH_QUICK=1): short runs that check every row works; not figures to quote.**\n\n")
	}
	fmt.Fprintf(b, "Written by TestLoadBenchmark (e2e/bench) on %s. Reproduce on a quiet machine with\n\n```\n%s\n```\n\n", rep.Started.UTC().Format("2006-01-02 15:04 MST"), FullRunCommand)
	fmt.Fprintf(b, "(`go tool task bench` runs the Go benchmarks first, then the same; this run: %s per run, soak %s). How it measures: see e2e/bench/doc.go.\n\n", rep.Duration, rep.SoakDuration)
	fmt.Fprintf(b, "Machine: %d cores (%s), shared by the load generator, the upstream and the target. ", runtime.NumCPU(), cpuModel())
	fmt.Fprintf(b, "Load: wrk, 2 threads, %d connections, %s per run, keep-alive, `GET %s` with the session cookie and `X-CSRF: 1`; ", conns, rep.Duration, apiPath)
	b.WriteString("each run starts from the cookies a browser would hold, after one request whose Set-Cookie answers replace the login's (row c0, one run after the others: a client that ignores Set-Cookie and replays the login's cookies, whose slide is due, so the gateway re-issues them on every request); ")
	b.WriteString("the upstream answers a 93-byte JSON body. Two rounds, the second in reverse order (the POST rows in the same rounds).\n\n")
	fmt.Fprintf(b, "Load average (1, 5, 15 min) before the run: %s; after: %s. Above the core count, other work shared the machine: read the ratios and CPU per request rather than the absolute rates.\n\n", rep.LoadBefore, rep.LoadAfter)
	b.WriteString("Versions: ")
	for i, k := range sortedKeys(rep.Versions) {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(b, "%s: `%s`", k, rep.Versions[k])
	}
	b.WriteString(".\n\n## Throughput and latency\n\n")
	b.WriteString("Rows c, d, e: bffgate with the access log off (the rows of issue 9, comparable with the history below); cl, dl, el: the default configuration (`log` not set: level info, JSON, one access line per request, written to a file). n: Debian's nginx as a bare keep-alive reverse proxy. ")
	fmt.Fprintf(b, "Rows i1 to i8: the issuer alone (bffgate with `gateway.enabled: false`, default configuration but for the token algorithm), %d connections: the figure is grants, exchanges or introspections per second; refresh grants and code exchanges are driven by internal/tokenload (a separate Go process: each code and refresh token is sent once; a code-exchange run ends early when the codes made for it beforehand, %.0f per second of run for ES256 and %.0f for RS256, are used up, and its rate is over the time it took), introspection and client_credentials by wrk (client_secret_basic).\n\n", issuerConns, codesPerSecondES256, codesPerSecondRS256)
	measured := map[string]bool{}
	for _, r := range rep.Table {
		measured[r.Key] = true
	}
	WriteTable(b, rep.Table, measured)
	b.WriteString("\nLatencies and peak RSS are the worse of the two rounds. CPU and peak RSS are the target process's own (for a, the upstream's; for n, CPU of nginx's master and workers, peak RSS of the largest; bffgate's include its idle embedded issuer); peak RSS is reset before each run, and bffgate is restarted after its login (its session kept) so that the issuer's argon2id check is not counted as gateway memory.\n\n")
	b.WriteString("Ratios of mean requests per second:\n\n| ratio | value |\n|---|---:|\n")
	for _, p := range [][2]string{{"b", "a"}, {"n", "a"}, {"b", "n"}, {"c", "b"}, {"c0", "b"}, {"d", "b"}, {"e", "b"}, {"c", "f"}, {"d", "f"}, {"e", "f"}, {"cl", "f"}, {"dl", "f"}, {"el", "f"}, {"f", "a"}} {
		if v := Ratio(rep.Table, p[0], p[1]); v > 0 {
			fmt.Fprintf(b, "| %s/%s | %.2f |\n", p[0], p[1], v)
		}
	}

	b.WriteString("\n## Against both bare proxies (issue 20)\n\n")
	b.WriteString("Targets: with the default configuration, bbolt and cookie sessions at least 0.85× a bare proxy's requests per second, Redis sessions at least 0.7×, and the CPU per request of bbolt and cookie within 1.3× the bare proxy's. Reported, never asserted.\n\n")
	writeProxyRatios(b, rep.Table, []string{"cl", "dl", "el", "c", "c0", "d", "e", "f"})

	fmt.Fprintf(b, "\n## POST with a %d-byte JSON body\n\n", postBodySize)
	fmt.Fprintf(b, "`POST %s` with `Content-Type: application/json`, the same cookies and headers, %d connections, in the same two rounds; the upstream counts the bodies it receives (every one checked).\n\n", apiPath, conns)
	WriteTable(b, rep.Post, allKeys(rep.Post))
	b.WriteString("\n")
	writeProxyRatios(b, rep.Post, []string{"cl", "dl", "el"})

	fmt.Fprintf(b, "\n## Peak memory at %d connections\n\n", refreshConns)
	fmt.Fprintf(b, "The default-configuration gateways, `GET %s`, %d connections, one run of %s each.\n\n", apiPath, refreshConns, rep.Duration)
	WriteTable(b, rep.Memory, allKeys(rep.Memory))

	fmt.Fprintf(b, "\n## Refresh scenario\n\nAccess tokens live 5 s, refresh tokens rotate, %d connections of one session, %s, access log off. bffgate refreshes 1 s before expiry (`gateway.refresh.skew`); oauth2-proxy refreshes sessions older than 4 s (`--cookie-refresh=4s`). wrk never stores the cookies a response sets, so every request carries the login's cookie (see doc.go).\n\n", refreshConns, rep.RefreshDuration)
	b.WriteString("| target | req/s | non-2xx | socket errors | p50 ms | p99 ms | p99.9 ms | CPU s | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Refresh {
		m := r.M
		fmt.Fprintf(b, "| %s | %.0f | %d | %d | %s | %s | %s | %.2f | %s |\n", r.Name, m.RPS, m.Non2xx, m.SocketErrors,
			fmtMS(float64(m.P50)), fmtMS(float64(m.P99)), fmtMS(float64(m.P999)), m.CPU.Seconds(), fmtMB(float64(m.PeakRSS)))
	}

	fmt.Fprintf(b, "\n## Login rate\n\nFull authorization-code flow with PKCE (GET /bff/login → issuer /authorize → login form → POST → /bff/callback → code exchange → session cookie) through the gateway (bbolt store) and its embedded issuer, without a browser: %d goroutines, each login with fresh cookies (no SSO shortcut), for %s per password hash kind. The issuer's password check dominates; the bcrypt row shows the flow with a cheaper one.\n\n", loginWorkers, min(rep.Duration, 10*time.Second))
	b.WriteString("| user's password hash | logins | logins/s | errors | p50 ms | p99 ms | CPU s | peak RSS MB |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, l := range rep.Login {
		fmt.Fprintf(b, "| %s | %d | %.1f | %d | %s | %s | %.2f | %s |\n", l.Hash, l.Logins, float64(l.Logins)/max(l.Duration.Seconds(), 1e-9), l.Errors,
			fmtMS(float64(l.P50)), fmtMS(float64(l.P99)), l.CPU.Seconds(), fmtMB(float64(l.PeakRSS)))
	}

	b.WriteString("\n## Scale-out (issue 8)\n\n")
	if len(rep.Scale) == 0 {
		b.WriteString("Not measured: BFFGATE_TEST_REDIS_URL was not set.\n")
	} else {
		fmt.Fprintf(b, "Two bffgate processes sharing sessions and issuer state in Redis (one session, logged in through the first, used on both; one wrk per instance with %d connections each), next to one instance on bbolt with %d connections (row d), measured right before; access log off. Latencies of the pair are the worse instance's. On %d shared cores a second instance adds no CPU, so this shows the cost of sharing state, not a speed-up: read each instance's CPU per request against the one on bbolt.\n\n", conns/2, conns, runtime.NumCPU())
		WriteTable(b, rep.Scale, map[string]bool{"1": true, "2": true})
		b.WriteString("\n| instance | req/s | CPU s | CPU µs/req | ÷ 1 × bbolt |\n|---|---:|---:|---:|---:|\n")
		one := rep.Scale[0].CPUPerReq()
		fmt.Fprintf(b, "| 1 × bffgate on bbolt | %.0f | %.2f | %.1f | 1.0× |\n", rep.Scale[0].RPS(), rep.Scale[0].meanCPU().Seconds(), one)
		for _, m := range rep.Scale[1].Runs {
			for i, p := range m.Parts {
				rel := "–"
				if one > 0 {
					rel = fmt.Sprintf("%.2f×", p.CPUPerReq()/one)
				}
				fmt.Fprintf(b, "| instance %d of 2 on Redis | %.0f | %.2f | %.1f | %s |\n", i+1, p.RPS, p.CPU.Seconds(), p.CPUPerReq(), rel)
			}
		}
	}

	b.WriteString("\n## Soak\n\n")
	if len(rep.Soak) == 0 {
		b.WriteString("Not run (BFFGATE_BENCH_SOAK=0).\n")
	} else {
		fmt.Fprintf(b, "The default-configuration gateways side by side, each at a steady %d requests per second for %s (an open loop in the test process: a ticker hands out the requests, %d workers per gateway send them with a browser's cookie jar), access tokens of an hour (no refresh during the soak: the refresh scenario measures refreshes). RSS is VmRSS before the load, after the warm-up (a tenth of the run, at most 30 s) and at the end; peak is VmHWM over the run.\n\n", rep.SoakRate, rep.SoakDuration, soakWorkers)
		b.WriteString("| gateway | requests | errors | p50 ms | p99 ms | CPU µs/req | RSS idle MB | after warm-up MB | end MB | end − warm-up | peak MB |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, s := range rep.Soak {
			fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %.1f | %s | %s | %s | %+.1f MB | %s |\n", s.Name, s.Requests, s.Errors, fmtMS(float64(s.P50)), fmtMS(float64(s.P99)),
				float64(s.CPU.Microseconds())/float64(max(s.Requests, 1)), fmtMB(float64(s.RSSIdle)), fmtMB(float64(s.RSSWarm)), fmtMB(float64(s.RSSEnd)),
				float64(s.RSSEnd-s.RSSWarm)/(1<<20), fmtMB(float64(s.RSSPeak)))
		}
	}

	if len(rep.Profiles) > 0 {
		b.WriteString("\n## CPU profiles (BFFGATE_BENCH_PROFILE=1)\n\n`perf record --all-user -g` (frame pointers) of the gateway process under the same load, outside the measured runs: user-space CPU by symbol, with its callees (children) and alone (self), entries of at least 4% with callees.\n")
		for _, k := range sortedKeys(rep.Profiles) {
			fmt.Fprintf(b, "\n### %s\n\n```\n%s\n```\n", k, rep.Profiles[k])
		}
	}
	if rep.ProfileDir != "" {
		fmt.Fprintf(b, "\n## CPU profiles\n\nIn %s: for every bffgate row, `get-KEY` / `post-KEY` / `issuer-KEY`.perf.data (`perf record --all-user -g` of the bffgate process under the row's load, outside the measured runs; read with `perf report -i FILE`) and .txt (`perf report --stdio --children`).\n", rep.ProfileDir)
	}

	rep.writeBeforeAfter(b)

	b.WriteString("\n## Targets (issue 9)\n\n")
	var ts []Target
	ratioTarget := func(rows []Row, a, bk string, bar float64) {
		v := Ratio(rows, a, bk)
		ts = append(ts, Target{Name: fmt.Sprintf("%s/%s ≥ %g", a, bk, bar), Value: fmt.Sprintf("%.2f", v), Met: v >= bar, Absent: v == 0})
	}
	ratioTarget(rep.Table, "c", "b", 0.7)
	ratioTarget(rep.Table, "d", "b", 0.7)
	ratioTarget(rep.Table, "c", "f", 5)
	ratioTarget(rep.Table, "d", "f", 5)
	for _, r := range rep.Refresh {
		if strings.HasPrefix(r.Name, "bffgate") {
			ts = append(ts, Target{Name: "zero non-2xx in the refresh scenario, " + r.Name, Value: fmt.Sprint(r.M.Non2xx), Met: r.M.Non2xx == 0})
		}
	}
	WriteTargets(b, ts)

	b.WriteString("\n## Targets (issue 20)\n\n")
	ts = nil
	for _, k := range []struct {
		key string
		bar float64
	}{{"cl", 0.85}, {"dl", 0.85}, {"el", 0.7}} {
		for _, base := range []string{"b", "n"} {
			ratioTarget(rep.Table, k.key, base, k.bar)
		}
	}
	for _, k := range []string{"cl", "dl"} {
		for _, base := range []string{"b", "n"} {
			v := CPURatio(rep.Table, k, base)
			ts = append(ts, Target{Name: fmt.Sprintf("CPU µs/req %s ÷ %s ≤ 1.3", k, base), Value: fmt.Sprintf("%.2f×", v), Met: v > 0 && v <= 1.3, Absent: v == 0})
		}
	}
	for _, r := range rep.Memory {
		rss := r.worst(func(m Measurement) float64 { return float64(m.PeakRSS) })
		ts = append(ts, Target{Name: fmt.Sprintf("peak RSS < 100 MB at %d connections, %s", refreshConns, r.Name), Value: fmtMB(rss) + " MB", Met: rss > 0 && rss < 100<<20})
	}
	for _, r := range rep.Refresh {
		if strings.HasPrefix(r.Name, "bffgate") {
			ts = append(ts, Target{Name: fmt.Sprintf("peak RSS < 100 MB at %d connections, refresh scenario, %s", refreshConns, r.Name), Value: fmtMB(float64(r.M.PeakRSS)) + " MB", Met: r.M.PeakRSS > 0 && r.M.PeakRSS < 100<<20})
		}
	}
	for _, s := range rep.Soak {
		// "No growth": the end within 10% (at least 2 MB) of the
		// memory after the warm-up.
		grow := s.RSSEnd - s.RSSWarm
		ts = append(ts, Target{Name: fmt.Sprintf("no RSS growth over the %s soak (end ≤ after warm-up + max(10%%, 2 MB)), %s", s.Duration.Round(time.Second), s.Name),
			Value: fmt.Sprintf("%+.1f MB", float64(grow)/(1<<20)), Met: s.RSSWarm > 0 && grow <= max(s.RSSWarm/10, 2<<20)})
	}
	for _, r := range rep.Table {
		switch {
		case strings.Contains(r.Name, "ES256") && strings.Contains(r.Name, "introspection"):
			ts = append(ts, Target{Name: "introspection of a live token ≥ 25,000/s (" + r.Key + ")", Value: fmt.Sprintf("%.0f/s", r.RPS()), Met: r.RPS() >= 25000})
		case strings.Contains(r.Name, "ES256") && strings.Contains(r.Name, "client_credentials"):
			ts = append(ts, Target{Name: "client_credentials with ES256 ≥ 20,000/s (" + r.Key + ")", Value: fmt.Sprintf("%.0f/s", r.RPS()), Met: r.RPS() >= 20000})
		}
	}
	WriteTargets(b, ts)
	if rep.History != "" {
		b.WriteString("\n")
		b.WriteString(strings.TrimSpace(rep.History))
		b.WriteString("\n")
	}
}

// writeProxyRatios is the table of rows against both bare proxies (b:
// fiber, n: nginx): requests per second and CPU per request.
func writeProxyRatios(b *strings.Builder, rows []Row, keys []string) {
	b.WriteString("| row | req/s ÷ b (fiber) | req/s ÷ n (nginx) | CPU µs/req ÷ b's | CPU µs/req ÷ n's |\n|---|---:|---:|---:|---:|\n")
	for _, k := range keys {
		var name string
		for _, r := range rows {
			if r.Key == k {
				name = r.Name
			}
		}
		if name == "" {
			continue
		}
		f := func(v float64, unit string) string {
			if v == 0 {
				return "–"
			}
			return fmt.Sprintf("%.2f%s", v, unit)
		}
		fmt.Fprintf(b, "| %s. %s | %s | %s | %s | %s |\n", k, name, f(Ratio(rows, k, "b"), ""), f(Ratio(rows, k, "n"), ""),
			f(CPURatio(rows, k, "b"), "×"), f(CPURatio(rows, k, "n"), "×"))
	}
}

func allKeys(rows []Row) map[string]bool {
	m := map[string]bool{}
	for _, r := range rows {
		m[r.Key] = true
	}
	return m
}

// writeBeforeAfter prints the figures issue 20 was filed with (HISTORY.md,
// section 3) next to this run's: the after column is generated, so no
// one copies figures by hand.
func (rep report) writeBeforeAfter(b *strings.Builder) {
	b.WriteString("\n## Issue 20: before and after\n\n")
	b.WriteString("Before: the figures the issue was filed with (a quiet two-core machine, the default configuration; HISTORY.md, section 3). After: this run.\n\n")
	b.WriteString("| | before (issue 20) | this run |\n|---|---:|---:|\n")
	rps := func(k string) float64 {
		for _, r := range rep.Table {
			if r.Key == k {
				return r.RPS()
			}
		}
		return 0
	}
	vs := func(k string) string {
		if rps(k) == 0 || rps("n") == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f (%.2f×)", rps(k), Ratio(rep.Table, k, "n"))
	}
	ratio := func(f func([]Row, string, string) float64, base string, keys ...string) string {
		var parts []string
		for _, k := range keys {
			if v := f(rep.Table, k, base); v > 0 {
				parts = append(parts, fmt.Sprintf("%.2f", v))
			} else {
				parts = append(parts, "–")
			}
		}
		return strings.Join(parts, " / ")
	}
	num := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return fmt.Sprintf("%.0f", v)
	}
	fmt.Fprintf(b, "| nginx bare keep-alive proxy, req/s | 62,500 | %s |\n", num(rps("n")))
	fmt.Fprintf(b, "| bbolt sessions, default configuration, req/s (÷ nginx) | 36,200 (0.58×) | %s |\n", vs("dl"))
	fmt.Fprintf(b, "| cookie sessions, default configuration, req/s (÷ nginx) | 30,800 (0.49×) | %s |\n", vs("cl"))
	fmt.Fprintf(b, "| Redis sessions, default configuration, req/s (÷ nginx) | 21,900 (0.35×) | %s |\n", vs("el"))
	fmt.Fprintf(b, "| access log off, ÷ fiber bare proxy, bbolt / cookie / Redis | 0.67 / 0.51 / 0.36 | %s |\n", ratio(Ratio, "b", "d", "c", "e"))
	fmt.Fprintf(b, "| CPU µs/req ÷ bare proxy, bbolt / cookie / Redis | 1.7× / 2.2× / 3.1× | ÷ b: %s; ÷ n: %s (default configuration) |\n",
		ratio(CPURatio, "b", "dl", "cl", "el"), ratio(CPURatio, "n", "dl", "cl", "el"))
	intro := "–"
	for _, r := range rep.Table {
		if strings.Contains(r.Name, "ES256") && strings.Contains(r.Name, "introspection") {
			intro = fmt.Sprintf("%.0f (wrk, %d connections, ES256 token)", r.RPS(), issuerConns)
		}
	}
	fmt.Fprintf(b, "| issuer introspection of a live token, per second | 11,000 to 13,500 (Go benchmark, 32 workers) | %s |\n", intro)
	fmt.Fprintf(b, "| oauth2-proxy v7.8.1, req/s | 3,850 | %s |\n", num(rps("f")))
}
