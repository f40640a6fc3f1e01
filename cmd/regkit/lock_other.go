//go:build !linux

package main

import "os/exec"

// setDeathSignal does nothing outside Linux: a command whose regkit died runs on.
func setDeathSignal(*exec.Cmd) {}
