// Package lbrpc balances net/rpc calls over the instances of a service with
// package lb's pickers.
//
//	b, _ := lb.New(ctx, view, "arith", lb.RoundRobin())
//	c := lbrpc.NewClient(b)
//	defer c.Close()
//	err := c.Call(ctx, "Arith.Multiply", args, &reply)
//
// Client picks an instance for every call and keeps one connection per
// instance. A call that could not be sent (the dial failed, or the connection
// was already shut down) is retried on another instance; a call whose
// connection broke after it was sent is not (net/rpc calls need not be
// idempotent): its error is returned. Dial gives one connection to one picked
// instance, for callers that manage connections themselves.
package lbrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/rpc"
	"sync"

	"github.com/regkit/regkit/lb"
	"github.com/regkit/regkit/registry"
)

// Picker is what the helpers pick from: *lb.Balancer and *lb.Pool.
type Picker interface {
	Pick(info lb.PickInfo) (lb.Result, error)
}

// DefaultMaxAttempts is how many instances Dial and Call try.
const DefaultMaxAttempts = 3

// Dial picks an instance and dials it (TCP, net/rpc's Gob codec), trying up to
// DefaultMaxAttempts instances while dials fail. Call the Result's Done when
// done with the connection (nil, or the error that made you drop it).
func Dial(ctx context.Context, p Picker, info lb.PickInfo) (*rpc.Client, lb.Result, error) {
	var errs []error
	for range DefaultMaxAttempts {
		r, err := p.Pick(info)
		if err != nil {
			return nil, lb.Result{}, errors.Join(append(errs, err)...)
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", r.Endpoint.Addr)
		if err == nil {
			return rpc.NewClient(conn), r, nil
		}
		r.Done(err)
		errs = append(errs, fmt.Errorf("lbrpc: dial %s: %w", r.Endpoint.Addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lb.Result{}, errors.Join(errs...)
}

// Client balances net/rpc calls; see the package doc. It is safe for concurrent
// use.
type Client struct {
	p      Picker
	mu     sync.Mutex
	conns  map[string]*rpc.Client // by address
	closed bool
}

// NewClient returns a Client picking from p.
func NewClient(p Picker) *Client { return &Client{p: p, conns: map[string]*rpc.Client{}} }

// Call calls method on a picked instance and waits for the reply or ctx. When
// ctx ends first it returns ctx's error; the call itself cannot be cancelled
// (net/rpc has no cancellation) and its reply is dropped.
func (c *Client) Call(ctx context.Context, method string, args, reply any) error {
	var errs []error
	for range DefaultMaxAttempts {
		r, err := c.p.Pick(lb.PickInfo{})
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		addr := r.Endpoint.Addr
		cl, err := c.conn(ctx, addr)
		if err != nil {
			r.Done(err)
			errs = append(errs, err)
			if ctx.Err() != nil || errors.Is(err, registry.ErrClosed) {
				break
			}
			continue
		}
		call := cl.Go(method, args, reply, make(chan *rpc.Call, 1))
		select {
		case <-call.Done:
		case <-ctx.Done():
			r.Done(nil)
			return ctx.Err()
		}
		switch {
		case call.Error == nil:
			r.Done(nil)
			return nil
		case errors.Is(call.Error, rpc.ErrShutdown):
			// Not sent: the connection was closed. Drop it and try again.
			c.drop(addr, cl)
			r.Done(call.Error)
			errs = append(errs, fmt.Errorf("lbrpc: %s: %w", addr, call.Error))
			continue
		case isServerError(call.Error):
			r.Done(nil) // the instance answered
			return call.Error
		default: // the connection broke after sending
			c.drop(addr, cl)
			r.Done(call.Error)
			return fmt.Errorf("lbrpc: %s: %w", addr, call.Error)
		}
	}
	return errors.Join(errs...)
}

func isServerError(err error) bool {
	var se rpc.ServerError
	return errors.As(err, &se)
}

func (c *Client) conn(ctx context.Context, addr string) (*rpc.Client, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, registry.ErrClosed
	}
	if cl := c.conns[addr]; cl != nil {
		c.mu.Unlock()
		return cl, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("lbrpc: dial %s: %w", addr, err)
	}
	cl := rpc.NewClient(conn)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		cl.Close()
		return nil, registry.ErrClosed
	}
	if old := c.conns[addr]; old != nil { // another call dialled first
		cl.Close()
		return old, nil
	}
	c.conns[addr] = cl
	return cl, nil
}

func (c *Client) drop(addr string, cl *rpc.Client) {
	c.mu.Lock()
	if c.conns[addr] == cl {
		delete(c.conns, addr)
	}
	c.mu.Unlock()
	cl.Close()
}

// Close closes every connection. Idempotent; Calls afterwards fail with
// registry.ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for a, cl := range c.conns {
		cl.Close()
		delete(c.conns, a)
	}
	return nil
}
