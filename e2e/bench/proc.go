package bench

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat.
// It is 100 on every Linux architecture Go supports (the kernel fixes it
// for user space whatever CONFIG_HZ is), and reading sysconf(_SC_CLK_TCK)
// would need cgo.
const clockTicks = 100

// ParseProcStatCPU returns the user plus system CPU time in the contents
// of a /proc/PID/stat file (proc(5): fields 14 utime and 15 stime). The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted after its last ')'.
func ParseProcStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat %.80q: no ')' closing the command name", stat)
	}
	f := strings.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("/proc stat: utime/stime %q is not a tick count", s)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// ParseProcStatusKB returns the value of a "Key:   N kB" line of a
// /proc/PID/status file in bytes (VmHWM is the peak resident set).
func ParseProcStatusKB(status, key string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(status))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != key {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status %s: %q, want \"N kB\"", key, strings.TrimSpace(v))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("/proc status %s: %q is not a size in kB", key, f[0])
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("/proc status has no %s line", key)
}

// ProcCPU returns the CPU time process pid has used so far.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return ParseProcStatCPU(string(b))
}

// ProcPeakRSS returns process pid's peak resident set size (VmHWM).
func ProcPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return ParseProcStatusKB(string(b), "VmHWM")
}

// ResetPeakRSS sets process pid's VmHWM back to its current RSS (proc(5):
// writing 5 to clear_refs), so the next ProcPeakRSS is the peak since now.
func ResetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// FindProcess returns the id of the one process whose executable is exe
// and whose environment holds the variable env (NAME=value). The e2e
// stack does not expose the bffgate process, but starts each one with its
// own BFFGATE_GATEWAY_LISTEN, which identifies it.
func FindProcess(exe, env string) (int, error) {
	want, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return 0, err
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	var found []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || got != want {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			continue
		}
		for _, kv := range strings.Split(string(b), "\x00") {
			if kv == env {
				found = append(found, pid)
				break
			}
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return 0, fmt.Errorf("no process runs %s with %s", exe, env)
	default:
		return 0, fmt.Errorf("%d processes run %s with %s: %v", len(found), exe, env, found)
	}
}
