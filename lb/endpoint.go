package lb

import (
	"sync/atomic"
	"time"

	"github.com/regkit/regkit/registry"
)

// Endpoint is one instance as a picker sees it: the instance, its dial address and
// the call statistics the Pool keeps for its ID across snapshots. Endpoints are
// built by the Pool and shared by every picker built from the same update; treat
// them as read-only.
type Endpoint struct {
	// Instance is the discovered instance (shared: do not modify).
	Instance registry.Instance
	// Addr is Instance.Addr(), computed once.
	Addr string
	st   *epState
}

// InFlight is the number of calls picked on this endpoint's instance by a
// load-aware policy (LeastLoaded, ConsistentHash) and not yet Done.
func (e *Endpoint) InFlight() int64 { return e.st.inflight.Load() }

// epState is what the Pool keeps per instance ID across updates.
type epState struct {
	pool     *Pool
	inflight atomic.Int64
	fails    atomic.Int32 // consecutive failures
	ejected  atomic.Bool

	// Under pool.mu.
	ejections  int // times ejected, decaying (see Ejection)
	until      time.Time
	lastReturn time.Time
	timer      stopper
	removed    bool
}

// Result is what Pool.Pick returns: the endpoint to call. Report the call's
// outcome with Done exactly once; the zero Result's Done does nothing.
type Result struct {
	// Endpoint is the picked endpoint.
	Endpoint *Endpoint
	counted  count
}

// count says what Pick counted for a Result: nothing, the endpoint's calls in
// flight, or those and the Pool's total (ConsistentHash's bound).
type count uint8

const (
	countNone count = iota
	countEndpoint
	countTotal
)

// Done reports the outcome of the call made on r.Endpoint: err nil for success,
// non-nil for a failure that says something about the instance (a refused
// connection, a reset, a timeout, an HTTP 5xx or gRPC Unavailable; not an
// application error). Consecutive failures eject the instance (see Ejection). It
// does not allocate and never blocks on the picking path.
func (r Result) Done(err error) {
	e := r.Endpoint
	if e == nil {
		return
	}
	st := e.st
	switch r.counted {
	case countEndpoint:
		st.inflight.Add(-1)
	case countTotal:
		st.inflight.Add(-1)
		st.pool.inflight.Add(-1)
	}
	if err == nil {
		if st.fails.Load() != 0 {
			st.fails.Store(0)
		}
		return
	}
	n := st.fails.Add(1)
	if th := st.pool.ej.ConsecutiveFailures; th > 0 && int(n) >= th && !st.ejected.Load() {
		st.pool.eject(st)
	}
}
