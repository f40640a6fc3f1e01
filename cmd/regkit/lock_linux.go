package main

import (
	"os/exec"
	"syscall"
)

// setDeathSignal has the kernel kill the command when regkit dies, so that it
// never runs on without the hold.
func setDeathSignal(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
