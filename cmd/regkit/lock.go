package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/recipes"
	"github.com/regkit/regkit/recipes/leader"
	"github.com/regkit/regkit/recipes/lock"
	"github.com/regkit/regkit/registry"
)

// Exit codes of lock and leader beside the command's own (GNU timeout's and the
// shell's conventions).
const (
	exitTimedOut   = 124 // --timeout ran out before the lock was acquired or leadership won
	exitHoldLost   = 125 // the lock or leadership was lost while the command ran; it was stopped
	exitCannotRun  = 126 // the command was found but could not be started
	exitCmdMissing = 127 // the command was not found
)

// tokenEnv is the environment variable that passes the fencing token to the
// command.
const tokenEnv = "REGKIT_FENCING_TOKEN"

// releaseTimeout bounds the unlock or resignation after the command ended.
const releaseTimeout = 10 * time.Second

const holdHelp = `
The command runs with standard input, output and error of regkit, and with
` + tokenEnv + ` set to the fencing token of the hold: the lock node's (or the
candidate node's) creation revision. Tokens of successive holders only grow, so a
resource that rejects any token lower than the highest it has seen (a fenced
resource) also rejects a late write of a holder that has already lost.

The hold is lost when the session can no longer be sure it holds: the session
expired or was revoked, or (with the default --policy suspended-is-lost) its
connection was interrupted. The command is then sent SIGTERM and, if it has not
exited after --grace, SIGKILL. Keep --grace well below the session TTL: another
holder may start once the server expires the session. On Linux the command is
also killed (SIGKILL) if regkit itself dies. SIGINT or SIGTERM to regkit are passed
on the same way (SIGTERM, then SIGKILL after --grace); the hold is released once
the command has exited. Signals go to the command's process only: a shell script
should exec its last program or pass them on.

--timeout bounds connecting and, when given, the wait for the hold (default: wait
as long as it takes).

Backends: etcd, ZooKeeper and Consul (whose session TTLs are 10s at the least).
Nacos has no sessions: exit status 1, "cannot hold", before anything is created.

Exit status: the command's (128+N when it was killed by signal N); 124 --timeout
ran out before the hold was won (the command did not run); 125 the hold was lost
while the command ran and it was stopped; 126 the command could not be started;
127 the command was not found; before the command runs, as every regkit command:
1 backend error (unreachable, refused, unsupported), 2 usage.`

// exitStatusError makes regkit exit with code; err (may be nil) is printed.
type exitStatusError struct {
	code int
	err  error
}

func (e exitStatusError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e exitStatusError) Unwrap() error { return e.err }

// holdFlags are the flags lock and leader share.
type holdFlags struct {
	grace  time.Duration
	ttl    time.Duration
	policy string
}

func (f *holdFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.DurationVar(&f.grace, "grace", 3*time.Second, "after SIGTERM, how long the command may take to exit before SIGKILL")
	fl.DurationVar(&f.ttl, "ttl", 0, "session TTL (default: the backend's, from the URL: etcd lease_ttl, zk session_timeout)")
	fl.StringVar(&f.policy, "policy", recipes.SuspendedIsLost.String(),
		"which session states end the hold: suspended-is-lost (also a connection interrupted) or lost-only (only an expired session)")
}

// options validates the flags, without any I/O.
func (f *holdFlags) options() ([]recipes.Option, error) {
	if f.grace < 0 {
		return nil, usagef("invalid --grace %v: must not be negative", f.grace)
	}
	if f.ttl < 0 {
		return nil, usagef("invalid --ttl %v: must not be negative", f.ttl)
	}
	var p recipes.Policy
	switch f.policy {
	case recipes.SuspendedIsLost.String():
		p = recipes.SuspendedIsLost
	case recipes.LostOnly.String():
		p = recipes.LostOnly
	default:
		return nil, usagef("invalid --policy %q: want %s or %s", f.policy, recipes.SuspendedIsLost, recipes.LostOnly)
	}
	host, _ := os.Hostname()
	opts := []recipes.Option{recipes.WithPolicy(p), recipes.WithValue([]byte(fmt.Sprintf("%s pid %d", host, os.Getpid())))}
	if f.ttl > 0 {
		opts = append(opts, recipes.WithSessionTTL(f.ttl))
	}
	return opts, nil
}

// holdArgs checks "PATH -- COMMAND [ARG...]" and returns the path and the command.
func holdArgs(cmd *cobra.Command, args []string) (string, []string, error) {
	syntax := cmd.CommandPath() + " PATH -- COMMAND [ARG...]"
	dash := cmd.ArgsLenAtDash()
	switch {
	case len(args) == 0 || dash == 0:
		return "", nil, usagef("missing argument PATH (%s)", syntax)
	case dash < 0:
		return "", nil, usagef("missing -- and COMMAND after PATH (%s)", syntax)
	case dash > 1:
		return "", nil, usagef("unexpected argument %q before -- (%s)", args[1], syntax)
	case len(args) == 1:
		return "", nil, usagef("missing COMMAND after -- (%s)", syntax)
	}
	path := args[0]
	if err := validKey(path); err != nil {
		return "", nil, usagef("invalid argument PATH: %v", errors.Unwrap(err))
	}
	if path == "/" {
		return "", nil, usagef("invalid argument PATH \"/\": a lock or election needs a key of its own, not the root")
	}
	return path, args[1:], nil
}

// waitTimeout returns ctx bounded by --timeout when the flag was given.
func (g *globals) waitTimeout(ctx context.Context, cmd *cobra.Command) (context.Context, context.CancelFunc) {
	if cmd.Flags().Changed("timeout") && g.timeout > 0 {
		return context.WithTimeout(ctx, g.timeout)
	}
	return context.WithCancel(ctx)
}

func newLockCmd(g *globals) *cobra.Command {
	var hf holdFlags
	cmd := &cobra.Command{
		Use:   "lock PATH -- COMMAND [ARG...]",
		Short: "Run a command while holding a distributed lock",
		Long: `Acquire the lock PATH (a recipes/lock Mutex: fair, waiters served in order, each
watching only its predecessor), run COMMAND while holding it, release it when the
command exits, and exit with the command's status. Like flock(1), across machines.
` + holdHelp,
		Example: `  regkit lock /locks/backup -- ./backup.sh
  regkit lock /locks/migrate --timeout 30s -- sh -c 'migrate --fencing-token "$REGKIT_FENCING_TOKEN"'`,
		Args: func(cmd *cobra.Command, args []string) error { _, _, err := holdArgs(cmd, args); return err },
		RunE: func(cmd *cobra.Command, args []string) error {
			path, argv, _ := holdArgs(cmd, args)
			opts, err := hf.options()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			c, err := g.open(ctx)
			if err != nil {
				return err
			}
			if err := g.needHolds(c, "a lock"); err != nil {
				c.Close()
				return err
			}
			lost := false
			defer func() { closeClient(c, lost) }()
			var sopts []registry.SessionOption
			if hf.ttl > 0 {
				sopts = append(sopts, registry.WithTTL(hf.ttl))
			}
			sctx, cancel := g.withTimeout(ctx)
			sess, err := c.NewSession(sctx, sopts...)
			cancel()
			if err != nil {
				return fmt.Errorf("session: %w", err)
			}
			m, err := lock.NewMutex(c, sess, path, opts...)
			if err != nil {
				return err
			}
			wctx, cancel := g.waitTimeout(ctx, cmd)
			hold, err := m.Lock(wctx)
			timedOut := wctx.Err() != nil && ctx.Err() == nil
			cancel()
			switch {
			case err != nil && ctx.Err() != nil:
				return fmt.Errorf("interrupted before the lock was acquired: %w", err)
			case err != nil && timedOut:
				return exitStatusError{exitTimedOut, fmt.Errorf("lock %s not acquired within --timeout %v", path, g.timeout)}
			case err != nil:
				return err
			}
			if g.verbose {
				fmt.Fprintf(g.stderr, "regkit: acquired lock %s (node %s, fencing token %d); running %q\n", path, hold.Key(), hold.Token(), argv)
			}
			res, runErr := runHeld(ctx, g, hold.Context(), hold.Token(), argv, hf.grace)
			if lost = res.lost != nil; !lost {
				uctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
				if err := m.Unlock(uctx); err != nil {
					fmt.Fprintf(g.stderr, "regkit: unlock %s: %v (the lock node goes with the session)\n", path, err)
				}
				cancel()
			}
			if runErr != nil {
				return runErr
			}
			return res.err("lock " + path)
		},
	}
	hf.register(cmd)
	return cmd
}

func newLeaderCmd(g *globals) *cobra.Command {
	var (
		hf      holdFlags
		requeue bool
	)
	cmd := &cobra.Command{
		Use:   "leader PATH -- COMMAND [ARG...]",
		Short: "Run a command only while leader of an election",
		Long: `Take part in the election PATH (a recipes/leader Selector, Curator's
LeaderSelector: candidates lead one at a time, in the order they joined) and run
COMMAND while leader. When the command exits, leadership is given up and regkit
exits with the command's status; when leadership is lost, the command is stopped.

With --requeue regkit campaigns again after every term (the command exited or was
stopped; after a lost session with a new one) and runs the command again each time
it leads, until SIGINT or SIGTERM: then it exits with the status of a command it
stopped, or 0. Giving leadership up puts it at the back of the line, so candidates
take turns.
` + holdHelp,
		Example: `  regkit leader /elections/scheduler -- ./scheduler
  regkit leader /elections/compactor --requeue -- ./compact-once.sh`,
		Args: func(cmd *cobra.Command, args []string) error { _, _, err := holdArgs(cmd, args); return err },
		RunE: func(cmd *cobra.Command, args []string) error {
			path, argv, _ := holdArgs(cmd, args)
			opts, err := hf.options()
			if err != nil {
				return err
			}
			if requeue {
				opts = append(opts, recipes.WithAutoRequeue())
			}
			ctx := cmd.Context()
			c, err := g.open(ctx)
			if err != nil {
				return err
			}
			if err := g.needHolds(c, "an election"); err != nil {
				c.Close()
				return err
			}
			return runLeader(ctx, cmd, g, c, path, argv, hf.grace, requeue, opts)
		},
	}
	hf.register(cmd)
	cmd.Flags().BoolVar(&requeue, "requeue", false, "campaign again after each term and run the command again when leading, until SIGINT or SIGTERM")
	return cmd
}

// needHolds fails, before anything is created, when the backend cannot hold
// what (a lock, an election): both need sessions with ephemeral sequential
// keys, which Nacos lacks.
func (g *globals) needHolds(c *registry.Client, what string) error {
	if caps := c.Capabilities(); caps.Sessions && caps.Ephemeral && caps.Sequential {
		return nil
	}
	scheme := "this"
	if raw, err := g.registryURL(); err == nil {
		if u, err := registry.ParseURL(raw); err == nil {
			scheme = "the " + u.Scheme
		}
	}
	return fmt.Errorf("%s backend cannot hold %s: it has no sessions with ephemeral sequential keys (etcd, ZooKeeper and Consul have): %w",
		scheme, what, registry.ErrNotSupported)
}

// termResult is how one term's command ended.
type termResult struct {
	res held
	err error // it could not be started
}

func runLeader(ctx context.Context, cmd *cobra.Command, g *globals, c *registry.Client, path string, argv []string,
	grace time.Duration, requeue bool, opts []recipes.Option) error {
	var (
		elected = make(chan *recipes.Hold) // a term starts; the command runs once main received it
		gaveUp  = make(chan struct{})      // closed when --timeout ran out before any term
		notify  = make(chan struct{}, 1)   // a term ended: read last
		mu      sync.Mutex
		last    *termResult // the latest term's result not yet read
	)
	lead := func(lctx context.Context, term *recipes.Hold) error {
		select {
		case elected <- term:
		case <-gaveUp:
			return nil
		case <-lctx.Done():
			return nil
		}
		res, err := runHeld(ctx, g, lctx, term.Token(), argv, grace)
		mu.Lock()
		last = &termResult{res, err}
		mu.Unlock()
		select {
		case notify <- struct{}{}:
		default:
		}
		return nil
	}
	take := func() *termResult {
		mu.Lock()
		defer mu.Unlock()
		r := last
		last = nil
		return r
	}
	lost := false
	defer func() { closeClient(c, lost) }()
	sel, err := leader.NewSelector(c, path, lead, opts...)
	if err != nil {
		return err
	}
	closeSel := func() {
		// Close cancels a running term (the command gets SIGTERM, then SIGKILL after
		// grace), waits for it and resigns; after a loss the resignation is not
		// waited for (the session goes with the client).
		d := grace + releaseTimeout + 5*time.Second
		if lost {
			d = lostCloseTimeout
		}
		cctx, cancel := context.WithTimeout(context.Background(), d)
		_ = sel.Close(cctx)
		cancel()
	}
	wctx, cancel := g.waitTimeout(context.Background(), cmd)
	defer cancel()
	waiting := wctx.Done()
	for {
		select {
		case term := <-elected:
			waiting = nil
			if g.verbose {
				fmt.Fprintf(g.stderr, "regkit: leader of %s (node %s, fencing token %d); running %q\n", path, term.Key(), term.Token(), argv)
			}
		case <-waiting:
			close(gaveUp)
			closeSel()
			return exitStatusError{exitTimedOut, fmt.Errorf("not leader of %s within --timeout %v", path, g.timeout)}
		case <-notify:
			r := take()
			if r == nil {
				continue
			}
			if r.err != nil {
				closeSel()
				return r.err
			}
			if !requeue {
				lost = r.res.lost != nil
				closeSel()
				return r.res.err("leadership of " + path)
			}
			if r.res.lost != nil {
				fmt.Fprintf(g.stderr, "regkit: leadership of %s lost while the command ran (%v); it was stopped (exit status %d); campaigning again\n",
					path, r.res.lost, r.res.code)
			} else if g.verbose {
				fmt.Fprintf(g.stderr, "regkit: the command exited with status %d; campaigning again\n", r.res.code)
			}
		case <-sel.Done():
			// Stopped by itself: the Client closed under it.
			if r := take(); r != nil && !requeue {
				if r.err != nil {
					return r.err
				}
				lost = r.res.lost != nil
				return r.res.err("leadership of " + path)
			}
			return fmt.Errorf("election %s: %w", path, registry.ErrClosed)
		case <-ctx.Done():
			closeSel()
			if r := take(); r != nil {
				if r.err != nil {
					return r.err
				}
				return held{code: r.res.code}.err("")
			}
			return nil
		}
	}
}

// lostCloseTimeout bounds the goodbye to a backend after a hold was lost: it may be
// unreachable, and what the session kept expires there anyway.
const lostCloseTimeout = time.Second

// closeClient shuts c down: within releaseTimeout, or lostCloseTimeout after a loss.
func closeClient(c *registry.Client, lost bool) {
	d := releaseTimeout
	if lost {
		d = lostCloseTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	_ = c.Shutdown(ctx)
	cancel()
}

// held is how a command run under a hold ended.
type held struct {
	code int   // its exit status, 128+N when killed by signal N
	lost error // non-nil when the hold was lost while it ran and it was stopped
}

// err is the error run returns for h: nil for status 0, the status, or the loss.
func (h held) err(what string) error {
	if h.lost != nil {
		return exitStatusError{exitHoldLost, fmt.Errorf("%s lost while the command ran (%v); it was stopped (its exit status: %d)", what, h.lost, h.code)}
	}
	if h.code == 0 {
		return nil
	}
	return exitStatusError{code: h.code}
}

// runHeld runs argv with the fencing token in its environment and waits for it to
// exit. When hold ends first (lost, or released by a Selector's Close) or
// interrupt ends (SIGINT or SIGTERM to regkit), the command is sent SIGTERM and,
// after grace, SIGKILL. It returns an error only when the command could not be
// started.
func runHeld(interrupt context.Context, g *globals, hold context.Context, token int64, argv []string, grace time.Duration) (held, error) {
	c := exec.Command(argv[0], argv[1:]...)
	c.Env = append(os.Environ(), tokenEnv+"="+strconv.FormatInt(token, 10))
	c.Stdin, c.Stdout, c.Stderr = g.stdin, g.stdout, g.stderr
	setDeathSignal(c)
	if err := c.Start(); err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return held{}, exitStatusError{exitCmdMissing, fmt.Errorf("command %q: %w", argv[0], err)}
		}
		return held{}, exitStatusError{exitCannotRun, fmt.Errorf("command %q: %w", argv[0], err)}
	}
	waited := make(chan struct{})
	go func() { // owned: ends when the command exits; runHeld waits for it
		_ = c.Wait()
		close(waited)
	}()
	var lost error
	select {
	case <-waited:
	case <-hold.Done():
		if cause := context.Cause(hold); !errors.Is(cause, recipes.ErrReleased) {
			lost = cause
			fmt.Fprintf(g.stderr, "regkit: hold lost (%v): stopping the command\n", cause)
		}
		stop(c, waited, grace)
	case <-interrupt.Done():
		stop(c, waited, grace)
	}
	return held{code: exitStatus(c.ProcessState), lost: lost}, nil
}

// stop sends SIGTERM to the command and, if it has not exited after grace,
// SIGKILL; it returns once the command has exited.
func stop(c *exec.Cmd, waited <-chan struct{}, grace time.Duration) {
	_ = c.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-waited:
	case <-t.C:
		_ = c.Process.Kill()
		<-waited
	}
}

// exitStatus is a shell's $? for a finished process: its exit code, or 128+N
// when signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
