package etcd_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/regkit/regkit/registry"
)

// Prefixes follow the one rule every backend applies (driver.CleanRoot); etcd used
// to accept "/a//b/" (ZooKeeper refused it). Checked before any connection.
func TestPrefixValidation(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, u := range []string{"etcd://127.0.0.1:1/a//b/", "etcd://127.0.0.1:1/a/./b", "etcd://127.0.0.1:1/a/..", "etcd://127.0.0.1:1//"} {
		_, err := registry.Open(ctx, u+"?dial_timeout=100ms")
		var fe *registry.FieldError
		if !errors.As(err, &fe) || fe.Field != "prefix" {
			t.Errorf("Open(%s) = %v, want a FieldError for prefix", u, err)
		}
	}
}
