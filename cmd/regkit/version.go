package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"

	"github.com/regkit/regkit/registry"
)

// versionInfo is what `regkit version` prints.
type versionInfo struct {
	Version  string   `json:"version"`
	Regkit   string   `json:"regkit"`
	Revision string   `json:"revision,omitempty"`
	Go       string   `json:"go"`
	Backends []string `json:"backends"`
}

func buildVersion() versionInfo {
	v := versionInfo{Version: "(devel)", Regkit: "(devel)", Go: runtime.Version(), Backends: registry.Drivers()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/regkit/regkit" {
			v.Regkit = d.Version
			if d.Replace != nil {
				v.Regkit = "(devel, replaced by " + d.Replace.Path + ")"
				if d.Replace.Version != "" && d.Replace.Version != "(devel)" {
					v.Regkit = d.Replace.Version + " (replaced by " + d.Replace.Path + ")"
				}
			}
		}
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" {
			v.Revision = s.Value
		}
	}
	return v
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the command's version, regkit's version and the backends compiled in",
		Long: `Print the command's module version (as installed by go install ...@version, else
"(devel)"), the regkit library version it was built with, the VCS revision when
known, the Go version and the URL schemes it can open. -o json for scripts.
` + exitHelp,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			if g.json() {
				return writeJSON(g.stdout, v)
			}
			fmt.Fprintf(g.stdout, "regkit %s\nlibrary: github.com/regkit/regkit %s\n", v.Version, v.Regkit)
			if v.Revision != "" {
				fmt.Fprintf(g.stdout, "revision: %s\n", v.Revision)
			}
			_, err := fmt.Fprintf(g.stdout, "go: %s\nbackends: %s\n", v.Go, strings.Join(v.Backends, ", "))
			return err
		},
	}
}
