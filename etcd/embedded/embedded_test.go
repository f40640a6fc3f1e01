package embedded_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// Data kept in a named directory survives a restart; Close removes only a
// directory it made itself.
func TestDataDir(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "data")
	s, err := embedded.Start(ctx, embedded.WithDataDir(dir))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := os.Stat(filepath.Join(dir, "member")); err != nil {
		t.Fatalf("named data dir not kept: %v", err)
	}
	s, err = embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Endpoint() == "" || s.URL("x") != "etcd://"+s.Endpoint()+"/x" {
		t.Errorf("Endpoint %q URL %q", s.Endpoint(), s.URL("x"))
	}
	s.Close()
}
