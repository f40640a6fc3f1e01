package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/internal/decimal"
	"github.com/regkit/regkit/registry"
	"github.com/regkit/regkit/registry/address"
)

// deregisterTimeout bounds the deregistration after SIGINT/SIGTERM.
const deregisterTimeout = 10 * time.Second

func newRegisterCmd(g *globals) *cobra.Command {
	var (
		meta   []string
		zone   string
		weight int
		id     string
	)
	cmd := &cobra.Command{
		Use:   "register SERVICE HOST:PORT",
		Short: "Register an instance and hold it until interrupted",
		Long: `Register an instance of SERVICE at HOST:PORT and keep it registered (it is put
again by itself whenever the backend drops it) until SIGINT or SIGTERM, then
deregister it and exit with status 0. The first registration must succeed within
--timeout (exit status 1 otherwise); after that it is held for as long as it takes.

HOST:PORT is registered as given (REGKIT_REGISTER_HOST and the other address
variables are not consulted). ":PORT" leaves the host to the library's resolver, as
a service linking regkit would: REGKIT_REGISTER_HOST, DUBBO_IP_TO_REGISTRY, then
REGKIT_PREFERRED_NETWORKS and the first site-local address.

The ID defaults to "HOST:PORT" (":" in IPv6 hosts becomes "_"), the weight to 100.
Each state change is printed (-o json: one JSON object a line, "event" is
registered, re-registering, deregistered).
` + exitHelp,
		Example: `  regkit register greeter 10.0.0.7:8080 --meta version=1.2 --zone eu-1 --weight 50
  regkit register greeter :8080 --id greeter-7`,
		Args: argsBetween(2, 2, "service", "host:port"),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, err := parseInstance(args[0], args[1], meta, zone, weight, id, cmd.Flags().Changed("weight"))
			if err != nil {
				return err
			}
			var opts []registry.Option
			if inst.Host != "" {
				opts = append(opts, registry.WithAddressResolver(&address.Resolver{IgnoreEnvironment: true, AllowLoopback: true}))
			}
			ctx := cmd.Context()
			c, err := g.open(ctx, opts...)
			if err != nil {
				return err
			}
			defer c.Close()
			rctx, cancel := g.withTimeout(ctx)
			reg, err := c.Register(rctx, inst)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("interrupted before the instance was registered: %w", err)
				}
				return err
			}
			state := reg.State()
			changed := reg.Changed()
			if err := printRegEvent(g, reg, state, nil); err != nil {
				reg.Close()
				return err
			}
			for {
				select {
				case <-ctx.Done():
					dctx, cancel := context.WithTimeout(context.Background(), deregisterTimeout)
					err := reg.Deregister(dctx)
					cancel()
					if err != nil && !errors.Is(err, registry.ErrClosed) {
						return fmt.Errorf("deregister: %w", err)
					}
					return printRegEvent(g, reg, registry.Deregistered, nil)
				case <-changed:
					changed = reg.Changed()
					if s := reg.State(); s != state {
						state = s
						if err := printRegEvent(g, reg, s, reg.Err()); err != nil {
							return err
						}
					}
				}
			}
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&meta, "meta", nil, "metadata `key=value` (repeatable)")
	f.StringVar(&zone, "zone", "", "zone, cluster or datacenter of the instance")
	f.IntVar(&weight, "weight", 0, "relative weight, at least 1 (default 100)")
	f.StringVar(&id, "id", "", "instance ID (default \"HOST:PORT\")")
	return cmd
}

// parseInstance builds and validates the instance without any I/O; errors name
// the flag or argument.
func parseInstance(service, hostport string, meta []string, zone string, weight int, id string, weightSet bool) (registry.Instance, error) {
	if err := registry.ValidServiceName(service); err != nil {
		return registry.Instance{}, usagef("invalid argument SERVICE: %v", err)
	}
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return registry.Instance{}, usagef("invalid argument HOST:PORT %q: %v", hostport, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || !decimal.Digits(portStr) || port < 1 || port > 65535 {
		return registry.Instance{}, usagef("invalid argument HOST:PORT %q: port must be a number in 1-65535", hostport)
	}
	if weightSet && weight < 1 {
		return registry.Instance{}, usagef("invalid --weight %d: must be at least 1", weight)
	}
	inst := registry.Instance{Service: service, Host: host, Port: port, Weight: weight, Zone: zone, ID: id}
	for _, kv := range meta {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return registry.Instance{}, usagef("invalid --meta %q: want key=value with a non-empty key", kv)
		}
		if inst.Metadata == nil {
			inst.Metadata = map[string]string{}
		}
		inst.Metadata[k] = v
	}
	// Validate what will be written, with the defaults the library fills in.
	probe := inst.Clone()
	if probe.Host == "" {
		probe.Host = "placeholder"
	}
	if probe.ID == "" {
		probe.ID = "placeholder"
	}
	if err := probe.Validate(); err != nil {
		var fe *registry.FieldError
		if errors.As(err, &fe) {
			flag := map[string]string{"ID": "--id", "Zone": "--zone", "Weight": "--weight", "Metadata": "--meta",
				"Host": "argument HOST:PORT", "Port": "argument HOST:PORT", "Service": "argument SERVICE"}[fe.Field]
			if flag == "" {
				flag = fe.Field
			}
			if strings.HasPrefix(flag, "--") {
				return registry.Instance{}, usagef("invalid %s %v: %s", flag, fe.Value, fe.Reason)
			}
			return registry.Instance{}, usagef("invalid %s %q: %s", flag, hostport, fe.Reason)
		}
		return registry.Instance{}, usageError{err}
	}
	return inst, nil
}

type regEventJSON struct {
	Time     time.Time    `json:"time"`
	Event    string       `json:"event"`
	Error    string       `json:"error,omitempty"`
	Instance instanceJSON `json:"instance"`
}

func printRegEvent(g *globals, reg registry.Registration, s registry.RegistrationState, err error) error {
	in := reg.Instance()
	if g.json() {
		e := regEventJSON{Time: time.Now(), Event: s.String(), Instance: toJSON(in)}
		if err != nil {
			e.Error = err.Error()
		}
		return writeJSON(g.stdout, e)
	}
	var msg string
	switch s {
	case registry.Registered:
		msg = fmt.Sprintf("registered %s/%s at %s; holding it until SIGINT or SIGTERM", in.Service, in.ID, in.Addr())
	case registry.Reregistering:
		msg = fmt.Sprintf("re-registering %s/%s (the backend dropped it)", in.Service, in.ID)
		if err != nil {
			msg += ": " + err.Error()
		}
	case registry.Deregistered:
		msg = fmt.Sprintf("deregistered %s/%s", in.Service, in.ID)
	default:
		msg = fmt.Sprintf("%s/%s: %s", in.Service, in.ID, s)
	}
	_, werr := fmt.Fprintf(g.stdout, "%s %s\n", time.Now().Format("15:04:05.000"), msg)
	return werr
}
