package topology

import (
	"os/exec"
	"syscall"
)

// setPdeathsig has the kernel kill the Redis process when the test binary
// dies without running its cleanups (a timeout, a kill), so that no
// redis-server outlives the run.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
