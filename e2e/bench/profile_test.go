package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// perfReport records where process pid spends its CPU while run runs
// (`perf record --all-user -g`, frame pointers), outside the measured
// runs: perf costs the profiled process some CPU. With file empty it
// returns perf's summary (user-space CPU by symbol, entries of at least
// 4% with callees) for RESULTS.md; otherwise it keeps the samples in
// file.perf.data and flat listings by symbol in file.txt (`perf report
// -i file.perf.data` reads the samples again, call graphs included) and
// returns the listing's path.
func (r *runner) perfReport(pid int, file string, run func()) string {
	t := r.t
	perf, err := exec.LookPath("perf")
	if err != nil {
		msg := "perf not found: install linux-perf (Debian) to profile"
		t.Log(msg)
		return msg
	}
	data := filepath.Join(t.TempDir(), "perf.data")
	if file != "" {
		data = file + ".perf.data"
	}
	rec := exec.Command(perf, "record", "--all-user", "-F", "499", "-g", "-p", fmt.Sprint(pid), "-o", data)
	var recOut logBuffer
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		return "perf record: " + err.Error()
	}
	run()
	_ = rec.Process.Signal(syscall.SIGINT)
	if err := rec.Wait(); err != nil && !strings.Contains(recOut.String(), "Captured and wrote") {
		return fmt.Sprintf("perf record: %v: %s", err, recOut.String())
	}
	if file != "" {
		// Two flat listings: by the symbol's own CPU (self), then with
		// its callees (children); the call graphs are in the data.
		var txt []byte
		for _, args := range [][]string{{"--no-children"}, {"--children"}} {
			out, err := exec.Command(perf, append([]string{"report", "-i", data, "--stdio", "--sort", "symbol", "-g", "none", "--percent-limit", "0.3"}, args...)...).CombinedOutput()
			if err != nil {
				return fmt.Sprintf("perf report: %v: %s", err, out)
			}
			txt = append(txt, out...)
		}
		mustf(t, os.WriteFile(file+".txt", txt, 0o644), "write %s.txt", file)
		t.Logf("profile: %s.perf.data, %s.txt", file, file)
		return file + ".txt"
	}
	out, err := exec.Command(perf, "report", "-i", data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "4").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("perf report: %v: %s", err, out)
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		// "  45.10%   0.20%  [.] symbol   -   -": keep the two
		// percentages and the symbol.
		f := strings.Fields(l)
		if len(f) >= 4 && !strings.HasPrefix(l, "#") && strings.HasSuffix(f[0], "%") {
			lines = append(lines, fmt.Sprintf("%8s %8s  %s", f[0], f[1], f[3]))
		}
	}
	return "children     self  symbol\n" + strings.Join(lines, "\n")
}
