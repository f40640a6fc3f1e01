package mem

import (
	"context"
	"fmt"

	"github.com/regkit/regkit/registry/driver"
)

type lease struct {
	c       *Conn
	service string
	id      string
	sig     driver.LostSignal
}

// loseLocked deletes the lease's instance (if still its own) and closes Lost.
func (l *lease) loseLocked(err error) {
	s := l.c.s
	if e := s.services[l.service][l.id]; e != nil && e.lease == l {
		delete(s.services[l.service], l.id)
		s.changedLocked(l.service, "")
	}
	delete(l.c.leases, l)
	l.sig.Lose(err)
}

func (l *lease) Lost() <-chan struct{} { return l.sig.Lost() }

func (l *lease) Err() error { return l.sig.Err() }

func (l *lease) Deregister(ctx context.Context) error {
	s := l.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(l.c); err != nil {
		return err
	}
	if e := s.services[l.service][l.id]; e != nil && e.lease != nil && e.lease.c == l.c {
		delete(s.services[l.service], l.id)
		delete(l.c.leases, e.lease)
		s.changedLocked(l.service, "")
	}
	delete(l.c.leases, l)
	return nil
}

var _ driver.HealthSetter = (*lease)(nil)

// SetHealthy sets the Healthy flag of the lease's instance, as listed.
func (l *lease) SetHealthy(ctx context.Context, healthy bool) error {
	s := l.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(l.c); err != nil {
		return fmt.Errorf("mem: set health of %s/%s: %w", l.service, l.id, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: set health of %s/%s: %w", l.service, l.id, err)
	}
	e := s.services[l.service][l.id]
	if e == nil || e.lease != l {
		return fmt.Errorf("mem: set health of %s/%s: %w", l.service, l.id, driver.ErrNotFound)
	}
	if e.inst.Healthy != healthy {
		e.inst.Healthy = healthy
		s.changedLocked(l.service, "")
	}
	return nil
}

func (l *lease) Abandon() {
	s := l.c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(l.c.leases, l)
}

// Put registers inst bound to this connection's liveness. An instance of the same
// service and ID that another connection keeps is not replaced: Put fails with
// ErrExists (the ID-ownership rule of package registry).
func (c *Conn) Put(ctx context.Context, inst driver.Instance) (driver.Lease, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	l := &lease{c: c, service: inst.Service, id: inst.ID}
	m := s.services[inst.Service]
	if m == nil {
		m = map[string]*entry{}
		s.services[inst.Service] = m
	}
	if old := m[inst.ID]; old != nil && old.lease != nil {
		if old.lease.c != c {
			return nil, fmt.Errorf("mem: put %s: the instance ID is registered by another connection: %w", inst, driver.ErrExists)
		}
		delete(c.leases, old.lease)
	}
	m[inst.ID] = &entry{inst: inst.Clone(), lease: l}
	c.leases[l] = struct{}{}
	s.changedLocked(inst.Service, "")
	return l, nil
}

// List returns the service's instances.
func (c *Conn) List(ctx context.Context, service string) (driver.Listing, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return driver.Listing{}, fmt.Errorf("mem: list %s: %w", service, err)
	}
	if err := ctx.Err(); err != nil {
		return driver.Listing{}, fmt.Errorf("mem: list %s: %w", service, err)
	}
	out := make([]driver.Instance, 0, len(s.services[service]))
	for _, e := range s.services[service] {
		out = append(out, e.inst.Clone())
	}
	return driver.Listing{Instances: out, Revision: uint64(s.rev)}, nil
}

// listQuiet is List without a context, for event delivery.
func (c *Conn) listQuiet(service string) (driver.Listing, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return driver.Listing{}, fmt.Errorf("mem: list %s: %w", service, err)
	}
	out := make([]driver.Instance, 0, len(s.services[service]))
	for _, e := range s.services[service] {
		out = append(out, e.inst.Clone())
	}
	return driver.Listing{Instances: out, Revision: uint64(s.rev)}, nil
}

// Watch notifies on every change of service until ctx is done or a fault breaks it.
func (c *Conn) Watch(ctx context.Context, service string, notify func()) error {
	return c.watch(ctx, &watch{service: service, notify: notify})
}

var _ driver.Remover = (*Conn)(nil)

// Remove deletes inst if this connection put it (Put is synchronous: nothing of an
// earlier Put can land later).
func (c *Conn) Remove(ctx context.Context, inst driver.Instance) error {
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

var _ driver.ServiceLister = (*Conn)(nil)

// Services returns the services with at least one instance.
func (c *Conn) Services(ctx context.Context) ([]string, error) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(c); err != nil {
		return nil, fmt.Errorf("mem: services: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("mem: services: %w", err)
	}
	out := make([]string, 0, len(s.services))
	for name, m := range s.services {
		if len(m) > 0 {
			out = append(out, name)
		}
	}
	return out, nil
}

// WatchServices notifies on every change of any service.
func (c *Conn) WatchServices(ctx context.Context, notify func()) error {
	return c.watch(ctx, &watch{all: true, notify: notify})
}
