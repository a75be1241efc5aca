package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	t.Parallel()
	tests := []struct {
		file string
		want WrkResult
	}{
		{"wrk-latency.txt", WrkResult{
			Requests: 149569, Duration: 2015082 * time.Microsecond,
			P50: 498 * time.Microsecond, P90: 3350 * time.Microsecond, P99: 8444 * time.Microsecond,
			P999: 16682 * time.Microsecond, Max: 23576 * time.Microsecond, Mean: 1208300 * time.Nanosecond,
			Non2xx: -1,
		}},
		{"wrk-count-status.txt", WrkResult{
			Requests: 152698, Duration: 2012197 * time.Microsecond,
			P50: 402 * time.Microsecond, P90: 3022 * time.Microsecond, P99: 6937 * time.Microsecond,
			P999: 12517 * time.Microsecond, Max: 21867 * time.Microsecond, Mean: 1040400 * time.Nanosecond,
			Non2xx: 0,
		}},
		{"wrk-non2xx.txt", WrkResult{
			Requests: 33401, Duration: 11020 * time.Millisecond,
			P50: 80 * time.Millisecond, P90: 120440 * time.Microsecond, P99: 230010 * time.Microsecond,
			P999: 610 * time.Millisecond, Max: 1020 * time.Millisecond, Mean: 85120 * time.Microsecond,
			SocketErrors: 5, StatusErrors: 1180, Non2xx: 1311,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile("testdata/" + tt.file)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseWrk(string(b))
			if err != nil {
				t.Fatalf("ParseWrk: %v", err)
			}
			wantRPS := float64(tt.want.Requests) / tt.want.Duration.Seconds()
			if !near(got.RPS, wantRPS, 1e-9) {
				t.Errorf("RPS = %.2f, want %.2f", got.RPS, wantRPS)
			}
			got.RPS = 0
			if got != tt.want {
				t.Errorf("ParseWrk =\n %+v\nwant\n %+v", got, tt.want)
			}
		})
	}
}

func TestParseWrkErrors(t *testing.T) {
	t.Parallel()
	good, err := os.ReadFile("testdata/wrk-latency.txt")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, out, wantErr string
	}{
		{"empty", "", "no Requests/sec line"},
		{"no script", strings.Split(string(good), "BENCH_JSON")[0], "no BENCH_JSON line"},
		{"bad json", strings.Replace(string(good), `"requests":149569`, `"requests":x`, 1), "BENCH_JSON line"},
		{"rps mismatch", strings.Replace(string(good), "Requests/sec:  74224.77", "Requests/sec:  90000.00", 1), "inconsistent"},
		{"p50 mismatch", strings.Replace(string(good), "50%  498.00us", "50%  2.00ms", 1), "50% latency"},
		{"bad latency unit", strings.Replace(string(good), "50%  498.00us", "50%  498.00xs", 1), "want a number and a unit"},
		{"status mismatch", strings.Replace(string(good), "Requests/sec:", "  Non-2xx or 3xx responses: 7\nRequests/sec:", 1), "status errors"},
		{"zero duration", strings.Replace(string(good), `"duration_us":2015082`, `"duration_us":0`, 1), "duration_us"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseWrk(tt.out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseWrk error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseWrkDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"812.00us", 812 * time.Microsecond, true},
		{"1.35ms", 1350 * time.Microsecond, true},
		{"2.01s", 2010 * time.Millisecond, true},
		{"1.50m", 90 * time.Second, true},
		{"1.00h", time.Hour, true},
		{"12", 0, false},
		{"ms", 0, false},
		{"-1.00ms", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseWrkDuration(tt.in)
			if (err == nil) != tt.ok || got != tt.want {
				t.Fatalf("ParseWrkDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestParseProcStatCPU(t *testing.T) {
	t.Parallel()
	// proc(5) layout; the command name holds a space and a ')'.
	stat := "4242 (bff gate) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 9 0 12345 1220000000 5000 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0"
	got, err := ParseProcStatCPU(stat)
	if err != nil {
		t.Fatal(err)
	}
	if want := 3250 * time.Millisecond; got != want {
		t.Fatalf("ParseProcStatCPU = %v, want %v (250+75 ticks)", got, want)
	}
	for name, bad := range map[string]string{
		"no comm":   "4242 bffgate S 1",
		"short":     "4242 (bffgate) S 1 2 3",
		"bad ticks": "4242 (bffgate) S 1 4242 4242 0 -1 4194560 1234 0 0 0 x 75 0",
	} {
		if _, err := ParseProcStatCPU(bad); err == nil {
			t.Errorf("%s: ParseProcStatCPU(%q) = nil error", name, bad)
		}
	}
}

func TestParseProcStatusKB(t *testing.T) {
	t.Parallel()
	status := "Name:\tbffgate\nVmPeak:\t 1400000 kB\nVmHWM:\t   45120 kB\nVmRSS:\t   30000 kB\nThreads:\t9\n"
	got, err := ParseProcStatusKB(status, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(45120 * 1024); got != want {
		t.Fatalf("VmHWM = %d, want %d", got, want)
	}
	if _, err := ParseProcStatusKB(status, "VmSwap"); err == nil {
		t.Error("missing key: nil error")
	}
	if _, err := ParseProcStatusKB("Threads:\t9\n", "Threads"); err == nil {
		t.Error("value without kB: nil error")
	}
}

// TestProcSelf reads this test process's own /proc files, so the parsers
// are checked against the kernel's real layout too.
func TestProcSelf(t *testing.T) {
	t.Parallel()
	pid := os.Getpid()
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	cpu, err := ProcCPU(pid)
	if err != nil || cpu < 0 {
		t.Fatalf("ProcCPU(self) = %v, %v", cpu, err)
	}
	rss, err := ProcPeakRSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("ProcPeakRSS(self) = %v, %v", rss, err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := FindProcess(exe, "BFFGATE_BENCH_NO_SUCH_VAR=1"); err == nil {
		t.Error("FindProcess found a process with a variable nobody sets")
	}
}
