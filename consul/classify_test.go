package consul

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/regkit/regkit/registry"
)

// Errors are classified by consul/api's StatusError code and by type, never by
// their text, and the cause stays reachable with errors.As.
func TestWrapClassifiesByStatusAndType(t *testing.T) {
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"403 permission denied", api.StatusError{Code: http.StatusForbidden, Body: "Permission denied"}, registry.ErrPermission},
		{"403 ACL not found", api.StatusError{Code: http.StatusForbidden, Body: "ACL not found"}, registry.ErrPermission},
		{"404", api.StatusError{Code: http.StatusNotFound, Body: "Unknown check ID"}, registry.ErrNotFound},
		{"400", api.StatusError{Code: http.StatusBadRequest, Body: "bad"}, registry.ErrInvalid},
		{"500", api.StatusError{Code: http.StatusInternalServerError, Body: "rpc error"}, registry.ErrUnavailable},
		// The text alone decides nothing.
		{"text only", errors.New("Permission denied: response code: 403"), registry.ErrUnavailable},
		{"net error", opErr, registry.ErrUnavailable},
		{"deadline", context.DeadlineExceeded, context.DeadlineExceeded},
	}
	for _, tc := range cases {
		err := wrap("register", "svc-1", tc.err)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: wrap = %v, want it to match %v", tc.name, err, tc.want)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: wrap = %v, want the cause kept with %%w", tc.name, err)
		}
		for _, other := range []error{registry.ErrPermission, registry.ErrNotFound, registry.ErrInvalid, registry.ErrUnavailable} {
			if other != tc.want && errors.Is(err, other) {
				t.Errorf("%s: wrap = %v also matches %v", tc.name, err, other)
			}
		}
	}
	var se api.StatusError
	if err := wrap("register", "svc-1", api.StatusError{Code: http.StatusForbidden}); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Errorf("the StatusError is not reachable with errors.As: %v", err)
	}
	var ne *net.OpError
	if err := wrap("register", "svc-1", opErr); !errors.As(err, &ne) {
		t.Errorf("the *net.OpError is not reachable with errors.As: %v", err)
	}
}

func TestCheckGoneByStatus(t *testing.T) {
	if !checkGone(api.StatusError{Code: http.StatusNotFound, Body: `Unknown check ID "x"`}) {
		t.Error("404 Unknown check ID: want gone")
	}
	if checkGone(api.StatusError{Code: http.StatusInternalServerError, Body: `CheckID "x" does not have associated TTL`}) {
		t.Error("500 does not have associated TTL: want retried, not gone")
	}
	if checkGone(errors.New("unknown check")) {
		t.Error("text alone: want not gone")
	}
}
