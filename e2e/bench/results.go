package bench

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Measurement is one load run against one target.
type Measurement struct {
	WrkResult
	CPU     time.Duration // the measured processes' user+system CPU during the run
	PeakRSS int64         // the largest VmHWM among them during the run, bytes
	// UpstreamTotal and UpstreamBearer are the requests the upstream saw
	// during the run, and how many carried a bearer token;
	// UpstreamBodies and UpstreamBodyBytes how many had a body, and its
	// bytes.
	UpstreamTotal, UpstreamBearer     int64
	UpstreamBodies, UpstreamBodyBytes int64
	// Parts are the figures of each URL and its process, when a target
	// has one process per URL (the scale-out row's instances).
	Parts []Part
}

// Part is one instance's share of a run.
type Part struct {
	Requests int64
	RPS      float64
	CPU      time.Duration
}

// CPUPerReq is the instance's CPU time per request in microseconds.
func (p Part) CPUPerReq() float64 {
	if p.Requests == 0 {
		return 0
	}
	return float64(p.CPU.Microseconds()) / float64(p.Requests)
}

// Row is one target's line of the results table: its runs in order.
type Row struct {
	Key, Name string
	Runs      []Measurement
}

// RPS is the mean requests per second over the runs.
func (r Row) RPS() float64 {
	if len(r.Runs) == 0 {
		return 0
	}
	var s float64
	for _, m := range r.Runs {
		s += m.RPS
	}
	return s / float64(len(r.Runs))
}

// worst returns the largest of f over the runs (latencies, peak RSS: the
// conservative figure when two rounds differ).
func (r Row) worst(f func(Measurement) float64) float64 {
	var v float64
	for _, m := range r.Runs {
		v = max(v, f(m))
	}
	return v
}

// CPUPerReq is the CPU time per request in microseconds over all runs.
func (r Row) CPUPerReq() float64 {
	var cpu time.Duration
	var n int64
	for _, m := range r.Runs {
		cpu += m.CPU
		n += m.Requests
	}
	if n == 0 {
		return 0
	}
	return float64(cpu.Microseconds()) / float64(n)
}

func (r Row) meanCPU() time.Duration {
	if len(r.Runs) == 0 {
		return 0
	}
	var cpu time.Duration
	for _, m := range r.Runs {
		cpu += m.CPU
	}
	return cpu / time.Duration(len(r.Runs))
}

func fmtMS(d float64) string { return fmt.Sprintf("%.2f", d/float64(time.Millisecond)) }

func fmtMB(b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", b/(1<<20))
}

// WriteTable writes the main Markdown table: one line per target.
func WriteTable(w io.Writer, rows []Row, measured map[string]bool) {
	fmt.Fprintln(w, "| scenario | req/s (mean) | req/s per round | p50 ms | p99 ms | p99.9 ms | CPU s/run | CPU µs/req | peak RSS MB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		var per []string
		for _, m := range r.Runs {
			per = append(per, fmt.Sprintf("%.0f", m.RPS))
		}
		cpu, cpuReq, rss := "–", "–", "–"
		if measured[r.Key] {
			cpu = fmt.Sprintf("%.2f", r.meanCPU().Seconds())
			cpuReq = fmt.Sprintf("%.1f", r.CPUPerReq())
			rss = fmtMB(r.worst(func(m Measurement) float64 { return float64(m.PeakRSS) }))
		}
		fmt.Fprintf(w, "| %s. %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Key, r.Name, r.RPS(), strings.Join(per, " / "),
			fmtMS(r.worst(func(m Measurement) float64 { return float64(m.P50) })),
			fmtMS(r.worst(func(m Measurement) float64 { return float64(m.P99) })),
			fmtMS(r.worst(func(m Measurement) float64 { return float64(m.P999) })),
			cpu, cpuReq, rss)
	}
}

// Ratio is a/b of two rows' mean requests per second (0 when either is
// missing).
func Ratio(rows []Row, a, b string) float64 {
	return ratioOf(rows, a, b, Row.RPS)
}

// CPURatio is a/b of two rows' CPU time per request (0 when either is
// missing).
func CPURatio(rows []Row, a, b string) float64 {
	return ratioOf(rows, a, b, Row.CPUPerReq)
}

func ratioOf(rows []Row, a, b string, f func(Row) float64) float64 {
	var ra, rb float64
	for _, r := range rows {
		switch r.Key {
		case a:
			ra = f(r)
		case b:
			rb = f(r)
		}
	}
	if ra == 0 || rb == 0 {
		return 0
	}
	return ra / rb
}

// Target is one target the report checks: a name, the figure, the bar.
type Target struct {
	Name   string
	Value  string
	Met    bool
	Absent bool // not measured in this run
}

func WriteTargets(w io.Writer, ts []Target) {
	fmt.Fprintln(w, "| target | measured | |")
	fmt.Fprintln(w, "|---|---:|---|")
	for _, t := range ts {
		verdict := "**missed**"
		switch {
		case t.Absent:
			verdict = "not measured"
		case t.Met:
			verdict = "met"
		}
		fmt.Fprintf(w, "| %s | %s | %s |\n", t.Name, t.Value, verdict)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
