//go:build unix

package issuer_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used so far:
// the benchmarks report it per operation, a figure that, unlike grants/s,
// holds on a machine shared with other work.
func processCPU() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
