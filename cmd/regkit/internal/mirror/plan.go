package mirror

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/regkit/regkit/registry"
)

// Step is one line of a Plan: what a sync would do with one source instance.
type Step struct {
	Route    string // Route.String()
	Service  string
	SourceID string
	Addr     string // host:port
	// Action is "copy" (a copy would be registered, or is already held by a
	// member of the group) or "skip".
	Action string
	// Reason says why a source instance is skipped: "is a copy", "unhealthy",
	// "native on both sides"; for "copy", "held by member M" when the group
	// already holds a copy of it.
	Reason string
}

// Plan reads every route's selected services once and says what a sync would
// do, writing nothing (`regkit sync --dry-run`).
func (s *Syncer) Plan(ctx context.Context) ([]Step, error) {
	var out []Step
	for _, r := range s.routes {
		names, err := r.From.Client.Services(ctx)
		if err != nil {
			return nil, fmt.Errorf("mirror: %s: list services: %w", r.From.Name, err)
		}
		for _, svc := range names {
			if !s.selected(svc) {
				continue
			}
			src, err := r.From.Client.Instances(ctx, svc)
			if err != nil {
				return nil, fmt.Errorf("mirror: %s: list %s: %w", r.From.Name, svc, err)
			}
			dst, err := r.To.Client.Instances(ctx, svc)
			if err != nil {
				return nil, fmt.Errorf("mirror: %s: list %s: %w", r.To.Name, svc, err)
			}
			out = append(out, s.plan(r, svc, src, dst)...)
		}
	}
	return out, nil
}

func (s *Syncer) plan(r Route, svc string, src, dst []registry.Instance) []Step {
	natives := map[string]bool{}
	holders := map[string][]string{}
	for _, in := range dst {
		if in.Metadata[MetaSourceCluster] == "" {
			natives[in.Addr()] = true
		} else if in.Metadata[MetaGroup] == s.o.group && in.Metadata[MetaSourceCluster] == r.From.Name {
			id := in.Metadata[MetaSourceID]
			holders[id] = append(holders[id], in.Metadata[MetaOwner])
		}
	}
	var out []Step
	for _, in := range src {
		st := Step{Route: r.String(), Service: svc, SourceID: in.ID, Addr: in.Addr(), Action: "skip"}
		switch {
		case in.Metadata[MetaSourceCluster] != "":
			st.Reason = "is a copy"
		case !in.Healthy:
			st.Reason = "unhealthy"
		case natives[in.Addr()]:
			st.Reason = "native on both sides"
		default:
			st.Action = "copy"
			if h := holders[in.ID]; len(h) > 0 {
				slices.Sort(h)
				st.Reason = "held by member " + strings.Join(h, ", ")
			}
		}
		out = append(out, st)
	}
	return out
}
