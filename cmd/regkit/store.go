package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/driver"
)

const storeHelp = `
Keys are slash-separated paths starting with "/" in the backend-neutral
coordination store (Client.Store), under the URL's prefix or chroot.`

// validKey checks a KEY argument without any I/O.
func validKey(key string) error {
	if err := driver.ValidKey(key); err != nil {
		return usagef("invalid argument KEY: %v", err)
	}
	return nil
}

// withStore opens the registry, bounded by --timeout, and calls f with its store.
func withStore(g *globals, cmd *cobra.Command, f func(s *registry.Store, cmd *cobra.Command) error) error {
	ctx, cancel := g.withTimeout(cmd.Context())
	defer cancel()
	c, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	cmd.SetContext(ctx)
	return f(c.Store(), cmd)
}

func newGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get KEY",
		Short: "Print the value of a key in the coordination store",
		Long: `Print the value of KEY as stored (a newline is added when the value does not end
with one). -o json prints {"key","value","version","create_revision","session"}
("value_bytes", base64, when the value is not valid UTF-8). A missing key is exit
status 3.
` + storeHelp + "\n" + exitHelp,
		Example: `  regkit get /config/greeter/timeout`,
		Args:    argsBetween(1, 1, "key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := validKey(key); err != nil {
				return err
			}
			return withStore(g, cmd, func(s *registry.Store, cmd *cobra.Command) error {
				n, err := s.Get(cmd.Context(), key)
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(g.stdout, toNodeJSON(n))
				}
				v := n.Value
				if len(v) == 0 || v[len(v)-1] != '\n' {
					v = append(v[:len(v):len(v)], '\n')
				}
				_, err = g.stdout.Write(v)
				return err
			})
		},
	}
}

func newPutCmd(g *globals) *cobra.Command {
	var (
		create  bool
		version int64
	)
	cmd := &cobra.Command{
		Use:   "put KEY [VALUE]",
		Short: "Write a key in the coordination store",
		Long: `Write VALUE (or, without VALUE, standard input) to KEY, creating it and its
missing parents when absent. --create fails with exit status 4 when the key exists;
--version N writes only if the key's version is N (compare-and-set; exit status 4
when it differs, 3 when the key is missing). Prints the new version.
` + storeHelp + "\n" + exitHelp,
		Example: `  regkit put /config/greeter/timeout 3s
  regkit put /config/greeter/rules < rules.json
  regkit put /config/greeter/timeout 5s --version 42`,
		Args: argsBetween(1, 2, "key", "value"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := validKey(key); err != nil {
				return err
			}
			versionSet := cmd.Flags().Changed("version")
			if versionSet && version < 0 {
				return usagef("invalid --version %d: must not be negative", version)
			}
			if versionSet && create {
				return usagef("--create and --version cannot be combined")
			}
			var value []byte
			if len(args) == 2 {
				value = []byte(args[1])
			} else {
				b, err := io.ReadAll(g.stdin)
				if err != nil {
					return usagef("read VALUE from standard input: %v", err)
				}
				value = b
			}
			return withStore(g, cmd, func(s *registry.Store, cmd *cobra.Command) error {
				ctx := cmd.Context()
				var n registry.Node
				var err error
				switch {
				case create:
					n, err = s.Create(ctx, key, value)
				case versionSet:
					n, err = s.Set(ctx, key, value, version)
				default:
					// Upsert: set; create when missing; set again if someone else
					// created it in between.
					n, err = s.Set(ctx, key, value, registry.AnyVersion)
					if errors.Is(err, registry.ErrNotFound) {
						n, err = s.Create(ctx, key, value)
						if errors.Is(err, registry.ErrExists) {
							n, err = s.Set(ctx, key, value, registry.AnyVersion)
						}
					}
				}
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(g.stdout, toNodeJSON(n))
				}
				_, err = fmt.Fprintf(g.stdout, "%s version=%d\n", n.Key, n.Version)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&create, "create", false, "fail (exit status 4) if the key exists")
	cmd.Flags().Int64Var(&version, "version", 0, "write only if the key's version is `N` (compare-and-set)")
	return cmd
}

func newRmCmd(g *globals) *cobra.Command {
	var (
		recursive bool
		version   int64
	)
	cmd := &cobra.Command{
		Use:   "rm [-r] KEY",
		Short: "Delete a key from the coordination store",
		Long: `Delete KEY. A key with children needs -r (exit status 4 otherwise), which deletes
its descendants too; --version N deletes only if the key's version is N. A missing
key is exit status 3.
` + storeHelp + "\n" + exitHelp,
		Example: `  regkit rm /config/greeter/timeout
  regkit rm -r /config/greeter`,
		Args: argsBetween(1, 1, "key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := validKey(key); err != nil {
				return err
			}
			opts := []registry.DeleteOption{}
			if recursive {
				opts = append(opts, registry.Recursive())
			} else if key == "/" {
				return usagef("deleting the root key \"/\" needs -r")
			}
			if cmd.Flags().Changed("version") {
				if version < 0 {
					return usagef("invalid --version %d: must not be negative", version)
				}
				opts = append(opts, registry.IfVersion(version))
			}
			return withStore(g, cmd, func(s *registry.Store, cmd *cobra.Command) error {
				if err := s.Delete(cmd.Context(), key, opts...); err != nil {
					return err
				}
				if g.json() {
					return writeJSON(g.stdout, map[string]any{"deleted": key, "recursive": recursive})
				}
				_, err := fmt.Fprintf(g.stdout, "deleted %s\n", key)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&recursive, "recursive", "r", false, "delete the key's descendants too")
	cmd.Flags().Int64Var(&version, "version", 0, "delete only if the key's version is `N`")
	return cmd
}

func newTreeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "tree KEY",
		Short: "List a key and all its descendants in the coordination store",
		Long: `List KEY (if present) and all its descendants, sorted by key: key, version,
creation revision, the session of ephemeral keys, and the value (quoted when it has
spaces or unprintable bytes, cut at 60 characters). -o json prints a JSON array of
nodes, values in full. Nothing at or under KEY is exit status 3.
` + storeHelp + "\n" + exitHelp,
		Example: `  regkit tree /
  regkit tree /locks -o json | jq -r '.[].key'`,
		Args: argsBetween(1, 1, "key"),
		RunE: func(cmd *cobra.Command, args []string) error {
			key := args[0]
			if err := validKey(key); err != nil {
				return err
			}
			return withStore(g, cmd, func(s *registry.Store, cmd *cobra.Command) error {
				nodes, err := s.Tree(cmd.Context(), key)
				if err != nil {
					return err
				}
				if g.json() {
					out := make([]nodeJSON, 0, len(nodes))
					for _, n := range nodes {
						out = append(out, toNodeJSON(n))
					}
					if err := writeJSON(g.stdout, out); err != nil {
						return err
					}
				} else if len(nodes) > 0 {
					t := newTable(g.stdout, "KEY", "VERSION", "CREATED", "SESSION", "VALUE")
					for _, n := range nodes {
						t.row(n.Key, strconv.FormatInt(n.Version, 10), strconv.FormatInt(n.CreateRevision, 10), orDash(n.Session), printable(n.Value, 60))
					}
					if err := t.flush(); err != nil {
						return err
					}
				}
				if len(nodes) == 0 {
					return notFoundError{"nothing at or under " + strconv.Quote(key)}
				}
				return nil
			})
		},
	}
}
