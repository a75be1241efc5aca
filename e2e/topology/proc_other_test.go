//go:build !linux

package topology

import "os/exec"

// setPdeathsig does nothing where the kernel has no parent-death signal;
// the test's cleanups stop the processes.
func setPdeathsig(*exec.Cmd) {}
