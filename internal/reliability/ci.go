package reliability

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// Scenarios is the choice of scenarios of one backend's ensemble test.
type Scenarios struct {
	// CI are run once each by default (CI), asserting the limits.
	CI []Scenario
	// Long are run Runs() times each instead when $REGKIT_RELIABILITY is
	// "long" (scripts/reliability.sh, for RELIABILITY.md).
	Long []Scenario
	// OnFailure, when set, is called at the end of a scenario's subtest that
	// failed, to log what helps (a server's log, say).
	OnFailure func(t *testing.T)
}

// RunCI runs the ensemble test of tg: each scenario of sc.CI once (or of
// sc.Long Runs() times when $REGKIT_RELIABILITY=long), keeping only the
// scenarios whose name contains $REGKIT_RELIABILITY_ONLY when it is set, each
// in a subtest named after it that reports its results and checks the
// limits; then a client process kill -9, as often.
func RunCI(t *testing.T, tg *Target, sc Scenarios) {
	scenarios, runs := sc.CI, 1
	if os.Getenv("REGKIT_RELIABILITY") == "long" {
		scenarios, runs = sc.Long, Runs()
	}
	if only := os.Getenv("REGKIT_RELIABILITY_ONLY"); only != "" {
		scenarios = slices.DeleteFunc(slices.Clone(scenarios), func(s Scenario) bool { return !strings.Contains(s.Name, only) })
	}
	for _, s := range scenarios {
		t.Run(s.Name, func(t *testing.T) {
			for run := range runs {
				r := Run(t, tg, s, run)
				Report(t, r)
				Check(t, r)
			}
			if t.Failed() && sc.OnFailure != nil {
				sc.OnFailure(t)
			}
		})
	}
	t.Run("client process kill -9", func(t *testing.T) {
		for range runs {
			r := ProcessKill(t, tg)
			Report(t, r)
			CheckProcessKill(t, tg, r)
		}
	})
}
