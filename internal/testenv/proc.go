//go:build unix

package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a server process started in its own process group, so that killing it
// also kills whatever it started (a JVM's helpers, a shell wrapper).
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error // set before done is closed
}

// startProc starts bin with args in dir, appending its stdout and stderr to logPath.
func startProc(name, bin string, args []string, dir, logPath string, env []string) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = logf
	cmd.Stderr = logf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) signal(sig syscall.Signal) {
	// Negative pid: the whole process group.
	_ = syscall.Kill(-p.cmd.Process.Pid, sig)
}

// kill SIGKILLs the process group and waits for the process to be reaped.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop asks the process group to terminate, and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	if p.exited() {
		p.signal(syscall.SIGKILL) // any child left behind in the group
		return
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
		p.signal(syscall.SIGKILL)
	case <-time.After(grace):
		p.kill()
	}
}

// logTail returns the end of the process's log, for failure messages.
func (p *proc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// waitReady polls ready every 50ms until it returns nil, the process exits, or
// timeout passes.
func (p *proc) waitReady(timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %v: %v\n--- log %s ---\n%s", p.name, timeout, err, p.logPath, p.logTail())
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v)\n--- log %s ---\n%s", p.name, p.err, p.logPath, p.logTail())
		case <-tick.C:
		}
	}
}

// procSlot holds the running process of one test server; start, stop and kill
// replace it, so Stop, Kill and Restart of the servers are safe to call in any order
// and more than once.
type procSlot struct {
	mu sync.Mutex
	p  *proc
}

// launch starts a process and waits until ready answers, failing the test if the
// process does not start, exits, or is not ready within timeout.
func (s *procSlot) launch(t testing.TB, name, bin string, args []string, dir, logPath string, env []string,
	timeout time.Duration, ready func() error) {
	t.Helper()
	if err := s.tryLaunch(name, bin, args, dir, logPath, env, timeout, ready); err != nil {
		t.Fatalf("testenv: %v", err)
	}
}

// tryLaunch is launch returning the error instead of failing the test.
func (s *procSlot) tryLaunch(name, bin string, args []string, dir, logPath string, env []string,
	timeout time.Duration, ready func() error) error {
	p, err := startProc(name, bin, args, dir, logPath, env)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.mu.Unlock()
	if err := p.waitReady(timeout, ready); err != nil {
		s.kill()
		return err
	}
	return nil
}

// errPortTaken reports whether a server failed because a port it was given was
// taken meanwhile (FreePort's answer is only true for a moment; other test
// processes pick ports too).
func errPortTaken(err error) bool {
	return err != nil && strings.Contains(strings.ToLower(err.Error()), "address already in use")
}

// take removes the running process from the slot and returns it (nil if none).
func (s *procSlot) take() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.p
	s.p = nil
	return p
}

// stop stops the running process gracefully, killing it after grace.
func (s *procSlot) stop(grace time.Duration) {
	if p := s.take(); p != nil {
		p.stop(grace)
	}
}

// kill SIGKILLs the running process.
func (s *procSlot) kill() {
	if p := s.take(); p != nil {
		p.kill()
	}
}
