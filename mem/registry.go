package mem

import (
	"context"
	"fmt"
	"sync"

	"github.com/regkit/regkit/registry"
)

type lease struct {
	c       *Conn
	service string
	id      string
	lost    chan struct{}
	err     error
	once    sync.Once
}

// loseLocked deletes the lease's instance (if still its own) and closes Lost.
func (l *lease) loseLocked(err error) {
	s := l.c.s
	if e := s.services[l.service][l.id]; e != nil && e.lease == l {
		delete(s.services[l.service], l.id)
		s.changedLocked(l.service, "")
	}
	delete(l.c.leases, l)
	l.once.Do(func() {
		l.err = err
		close(l.lost)
	})
}

func (l *lease) Lost() <-chan struct{} { return l.lost }

func (l *lease) Err() error {
	l.c.s.mu.Lock()
	defer l.c.s.mu.Unlock()
	return l.err
}

func (l *lease) Deregister(ctx context.Context) error {
	s := l.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(l.c); err != nil {
		return err
	}
	if _, ok := s.services[l.service][l.id]; ok {
		delete(s.services[l.service], l.id)
		s.changedLocked(l.service, "")
	}
	delete(l.c.leases, l)
	return nil
}

func (l *lease) Abandon() {
	s := l.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(l.c.leases, l)
}

// Put registers inst bound to this connection's liveness.
func (c *Conn) Put(ctx context.Context, inst registry.Instance) (registry.Lease, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &lease{c: c, service: inst.Service, id: inst.ID, lost: make(chan struct{})}
	m := s.services[inst.Service]
	if m == nil {
		m = map[string]*entry{}
		s.services[inst.Service] = m
	}
	if old := m[inst.ID]; old != nil && old.lease != nil && old.lease.c == c {
		delete(c.leases, old.lease)
	}
	m[inst.ID] = &entry{inst: inst.Clone(), lease: l}
	c.leases[l] = struct{}{}
	s.changedLocked(inst.Service, "")
	return l, nil
}

// List returns the service's instances.
func (c *Conn) List(ctx context.Context, service string) (registry.Listing, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return registry.Listing{}, fmt.Errorf("mem: list %s: %w", service, err)
	}
	out := make([]registry.Instance, 0, len(s.services[service]))
	for _, e := range s.services[service] {
		out = append(out, e.inst.Clone())
	}
	return registry.Listing{Instances: out, Revision: uint64(s.rev)}, nil
}

// Watch notifies on every change of service until ctx is done or a fault breaks it.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	return c.watch(ctx, &watch{service: service, notify: notify})
}

var _ registry.Remover = (*Conn)(nil)

// Remove deletes inst if this connection put it (Put is synchronous: nothing of an
// earlier Put can land later).
func (c *Conn) Remove(ctx context.Context, inst registry.Instance) error {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return fmt.Errorf("mem: remove %s: %w", inst, err)
	}
	if e := s.services[inst.Service][inst.ID]; e != nil && e.lease != nil && e.lease.c == c {
		delete(s.services[inst.Service], inst.ID)
		delete(c.leases, e.lease)
		s.changedLocked(inst.Service, "")
	}
	return nil
}
