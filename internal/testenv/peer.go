package testenv

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// peerProc is the process of a live peer (the Curator peer, the Dubbo JS peer):
// started in a process group of its own with its stderr in a log file, its stdout
// read line by line, and stopped by t.Cleanup, which shows the log's tail when the
// test failed.
type peerProc struct {
	name    string // for messages: "Curator peer"
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	logPath string
	quit    string        // written to stdin before it is closed to stop the peer ("": none)
	done    chan struct{} // closed once the process has exited and its output is read
}

// startPeerProc starts cmd as the peer called name, with its stderr in logPath.
// Each stdout line goes to onLine; a line it does not handle (false) goes to the
// log. Close (quit, then closing stdin) stops it at the test's end.
func startPeerProc(t testing.TB, name string, cmd *exec.Cmd, logPath, quit string, onLine func(line string) bool) *peerProc {
	t.Helper()
	p := &peerProc{name: name, cmd: cmd, logPath: logPath, quit: quit, done: make(chan struct{})}
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd.Stderr = logf
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start the %s: %v", name, err)
	}
	go p.read(out, onLine)
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("--- %s log %s ---\n%s", name, logPath, p.logTail())
		}
	})
	return p
}

// read hands the peer's output lines to onLine until it ends, then reaps the
// process.
func (p *peerProc) read(out io.Reader, onLine func(string) bool) {
	log, err := os.OpenFile(p.logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		log = nil
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if line := sc.Text(); !onLine(line) && log != nil {
			fmt.Fprintln(log, line)
		}
	}
	if log != nil {
		log.Close()
	}
	_, _ = io.Copy(io.Discard, out)
	_ = p.cmd.Wait()
	close(p.done)
}

// Kill kills the peer with SIGKILL (its ZooKeeper session stays until it expires).
func (p *peerProc) Kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Close asks the peer to end (its quit line, then the end of its stdin: it closes
// its ZooKeeper client, deleting its ephemeral nodes) and kills it after 15s; a
// no-op once it has exited.
func (p *peerProc) Close() {
	select {
	case <-p.done:
		return
	default:
	}
	if p.quit != "" {
		_, _ = io.WriteString(p.stdin, p.quit+"\n")
	}
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.Kill()
	}
}

// logTail is the end of the peer's log, for a failure message.
func (p *peerProc) logTail() string {
	b, _ := os.ReadFile(p.logPath)
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
