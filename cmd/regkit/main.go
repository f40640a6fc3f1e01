package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	_ "github.com/regkit/regkit/consul"
	_ "github.com/regkit/regkit/etcd"
	_ "github.com/regkit/regkit/mem"
	_ "github.com/regkit/regkit/nacos"
	"github.com/regkit/regkit/registry"
	_ "github.com/regkit/regkit/zk"
)

// Exit codes; see the package doc.
const (
	exitOK       = 0
	exitError    = 1
	exitUsage    = 2
	exitNotFound = 3
	exitConflict = 4
)

const exitHelp = `
Exit status: 0 success; 1 backend error (unreachable, refused, unsupported);
2 usage (bad flag, argument or URL; nothing sent); 3 not found; 4 conflict
(key exists, version differs, key has children).`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args and returns the exit code. ctx is cancelled
// by SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(g)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if msg := err.Error(); msg != "" { // empty: lock or leader passing on the command's status
		fmt.Fprintf(stderr, "regkit: %s\n", msg)
	}
	if code == exitUsage && cmd != nil {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return code
}

// globals are the flags every command shares, and the standard streams.
type globals struct {
	url     string
	output  string
	timeout time.Duration
	verbose bool

	stdin          io.Reader
	stdout, stderr io.Writer
}

func newRoot(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "regkit",
		Short: "Inspect and operate service registries (etcd, ZooKeeper, Consul, Nacos) and serve them over DNS",
		Long: `regkit inspects and operates any registry regkit can open, and serves it over DNS.

The registry URL comes from --url or the REGKIT_URL environment variable:
  etcd://h1:2379,h2:2379/prefix   zk://h:2181/chroot   consul://h:8500/ns
  nacos://h:8848?namespace=x      mem://name (in-process only)

Tables by default; -o json for scripts (watch and register: one JSON object a line).
` + exitHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				if sug := cmd.SuggestionsFor(args[0]); len(sug) > 0 {
					msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(sug, ", "))
				}
				return usageError{errors.New(msg)}
			}
			return nil
		},
		RunE:                       func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		CompletionOptions:          cobra.CompletionOptions{DisableDefaultCmd: true},
		SuggestionsMinimumDistance: 2,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if g.output != "table" && g.output != "json" {
				return usagef("invalid -o/--output %q: want table or json", g.output)
			}
			if g.timeout < 0 {
				return usagef("invalid --timeout %v: must not be negative", g.timeout)
			}
			return nil
		},
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.url, "url", "", "registry URL (default: $REGKIT_URL)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second,
		"bound on connecting, on each one-shot command (ls, get, put, rm, tree), on register's first registration and, when given, on the wait of lock and leader; 0 means none")
	pf.BoolVarP(&g.verbose, "verbose", "v", false, "log the library's informational messages to stderr")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err} })

	root.AddCommand(
		newLsCmd(g), newWatchCmd(g), newRegisterCmd(g),
		newGetCmd(g), newPutCmd(g), newRmCmd(g), newTreeCmd(g),
		newDNSCmd(g), newVersionCmd(g), newSyncCmd(g),
		newLockCmd(g), newLeaderCmd(g),
	)
	// Runtime failures are wrapped so that exitCode can tell them from cobra's own
	// parsing errors (unknown command or flag), which are usage errors.
	wrapRunE(root)
	return root
}

// wrapRunE marks every error returned by a command's RunE as a runtime error.
func wrapRunE(c *cobra.Command) {
	if f := c.RunE; f != nil {
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if err := f(cmd, args); err != nil {
				return runError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapRunE(sub)
	}
}

// usageError is bad input found before any I/O: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// runError is an error returned by a command's RunE.
type runError struct{ err error }

func (e runError) Error() string { return e.err.Error() }
func (e runError) Unwrap() error { return e.err }

// notFoundError is an empty answer that scripts must see as "not found".
type notFoundError struct{ msg string }

func (e notFoundError) Error() string { return e.msg }

// exitCode maps an error to the documented exit status.
func exitCode(err error) int {
	var u usageError
	var nf notFoundError
	var re runError
	var es exitStatusError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &es):
		return es.code
	case errors.As(err, &u), errors.Is(err, registry.ErrInvalid):
		return exitUsage
	case errors.As(err, &nf), errors.Is(err, registry.ErrNotFound):
		return exitNotFound
	case errors.Is(err, registry.ErrExists), errors.Is(err, registry.ErrVersionConflict),
		errors.Is(err, registry.ErrNotEmpty):
		return exitConflict
	case !errors.As(err, &re):
		return exitUsage // cobra's own: unknown command, missing or extra arguments
	}
	return exitError
}

// noArgs rejects positional arguments, naming them.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// argsBetween requires min to max positional arguments, named by names.
func argsBetween(min, max int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < min {
			return usagef("missing argument %s", strings.ToUpper(names[len(args)]))
		}
		if len(args) > max {
			return usagef("unexpected argument %q (%s takes %s)", args[max], cmd.Name(), strings.ToUpper(strings.Join(names, " ")))
		}
		return nil
	}
}

// registryURL returns the URL to open, validated without any I/O.
func (g *globals) registryURL() (string, error) {
	raw, from := g.url, "--url"
	if raw == "" {
		raw, from = os.Getenv("REGKIT_URL"), "REGKIT_URL"
	}
	if raw == "" {
		return "", usagef("no registry URL: give --url or set REGKIT_URL (e.g. etcd://127.0.0.1:2379/prefix)")
	}
	u, err := registry.ParseURL(raw)
	if err != nil {
		return "", usagef("invalid %s: %v", from, err)
	}
	if u.Scheme == "" {
		return "", usagef("invalid %s %q: no scheme (want one of %s)", from, registry.RedactURL(u), strings.Join(schemes(), ", "))
	}
	if !slices.Contains(registry.Drivers(), u.Scheme) {
		return "", usagef("invalid %s %q: unknown scheme %q (want one of %s)", from, registry.RedactURL(u), u.Scheme, strings.Join(schemes(), ", "))
	}
	return raw, nil
}

func schemes() []string {
	var out []string
	for _, s := range registry.Drivers() {
		out = append(out, s+"://")
	}
	return out
}

// open connects to the registry within --timeout.
func (g *globals) open(ctx context.Context, opts ...registry.Option) (*registry.Client, error) {
	raw, err := g.registryURL()
	if err != nil {
		return nil, err
	}
	octx, cancel := g.withTimeout(ctx)
	defer cancel()
	c, err := registry.Open(octx, raw, append([]registry.Option{registry.WithLogger(g.logger())}, opts...)...)
	if err != nil {
		if errors.Is(err, registry.ErrInvalid) {
			return nil, usageError{fmt.Errorf("invalid registry URL: %w", err)}
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// withTimeout bounds a one-shot operation by --timeout.
func (g *globals) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if g.timeout > 0 {
		return context.WithTimeout(ctx, g.timeout)
	}
	return context.WithCancel(ctx)
}

func (g *globals) logger() *slog.Logger {
	lvl := slog.LevelWarn
	if g.verbose {
		lvl = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: lvl}))
}

func (g *globals) json() bool { return g.output == "json" }
