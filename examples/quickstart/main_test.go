package main

import (
	"testing"

	"github.com/regkit/regkit/internal/testenv"
)

// TestQuickstart runs the quickstart end to end on the backend it defaults to.
func TestQuickstart(t *testing.T) {
	t.Setenv("REGKIT_URL", "")
	if err := run(); err != nil {
		t.Fatal(err)
	}
}

// TestQuickstartOnEtcd runs it against a real etcd through REGKIT_URL.
func TestQuickstartOnEtcd(t *testing.T) {
	srv := testenv.StartEtcd(t)
	t.Setenv("REGKIT_URL", "etcd://"+srv.Endpoint()+"/quickstart")
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
