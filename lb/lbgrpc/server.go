package lbgrpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/regkit/regkit/registry"
)

// DefaultDrainDelay is how long GracefulStop waits, after deregistering, for
// callers to notice before it stops accepting RPCs.
const DefaultDrainDelay = 2 * time.Second

// ServeOption configures Serve.
type ServeOption func(*serveOptions)

type serveOptions struct {
	drain    time.Duration
	dialOpts []grpc.DialOption
	regOpts  []registry.RegisterOption
}

// WithDrainDelay sets how long GracefulStop waits between deregistering and
// stopping the server (default DefaultDrainDelay): the time callers' watches
// need to drop the instance, so they stop sending new RPCs to it.
func WithDrainDelay(d time.Duration) ServeOption { return func(o *serveOptions) { o.drain = d } }

// WithReadyDialOptions sets the options of the connection Serve opens to its own
// server to see it serving (default: insecure credentials; give the client
// credentials a TLS server needs).
func WithReadyDialOptions(opts ...grpc.DialOption) ServeOption {
	return func(o *serveOptions) { o.dialOpts = opts }
}

// WithRegisterOptions passes options to the Register call (default none): a
// health check (registry.WithHealthCheck) whose verdict callers' balancers
// follow, marking the instance unhealthy while the process is alive but broken.
func WithRegisterOptions(opts ...registry.RegisterOption) ServeOption {
	return func(o *serveOptions) { o.regOpts = append(o.regOpts, opts...) }
}

// Serving is a gRPC server serving on a listener and registered in a registry.
type Serving struct {
	srv  *grpc.Server
	reg  registry.Registration
	o    serveOptions
	done chan struct{}
	err  error // Serve's error, set before done closes

	stopOnce sync.Once
	stopErr  error
}

// Serve starts srv on lis and, once a gRPC connection to lis is READY (the
// server is serving), registers inst through r; inst's Port defaults to the
// listener's. The instance is registered only while the server can take calls:
// GracefulStop deregisters first, waits the drain delay, then drains and stops.
// If ctx ends or registration fails, the server is stopped and the error
// returned.
func Serve(ctx context.Context, r registry.Registrar, srv *grpc.Server, lis net.Listener, inst registry.Instance, opts ...ServeOption) (*Serving, error) {
	o := serveOptions{drain: DefaultDrainDelay}
	for _, f := range opts {
		f(&o)
	}
	if o.dialOpts == nil {
		o.dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	if inst.Port == 0 {
		if a, ok := lis.Addr().(*net.TCPAddr); ok {
			inst.Port = a.Port
		}
	}
	s := &Serving{srv: srv, o: o, done: make(chan struct{})}
	go func() { // owned: ends when srv stops, which Stop and GracefulStop wait for
		defer close(s.done)
		s.err = srv.Serve(lis)
	}()
	if err := waitServing(ctx, lis.Addr().String(), o.dialOpts); err != nil {
		srv.Stop()
		<-s.done
		return nil, fmt.Errorf("lbgrpc: server on %s not serving: %w", lis.Addr(), err)
	}
	reg, err := r.Register(ctx, inst, o.regOpts...)
	if err != nil {
		srv.Stop()
		<-s.done
		return nil, err
	}
	s.reg = reg
	return s, nil
}

// waitServing dials addr and waits until the connection is READY.
func waitServing(ctx context.Context, addr string, opts []grpc.DialOption) error {
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	cc.Connect()
	for {
		st := cc.GetState()
		if st == connectivity.Ready {
			return nil
		}
		if !cc.WaitForStateChange(ctx, st) {
			return ctx.Err()
		}
	}
}

// Registration returns the server's registration.
func (s *Serving) Registration() registry.Registration { return s.reg }

// Done is closed when the server has stopped serving.
func (s *Serving) Done() <-chan struct{} { return s.done }

// Err returns why the server stopped (nil after GracefulStop or Stop).
func (s *Serving) Err() error {
	select {
	case <-s.done:
		if errors.Is(s.err, grpc.ErrServerStopped) {
			return nil
		}
		return s.err
	default:
		return nil
	}
}

// GracefulStop takes the server out of rotation without failing a call: it
// deregisters the instance, waits the drain delay for callers to notice, then
// calls the server's GracefulStop (no new RPCs; in-flight ones finish). If ctx
// ends first, the server is stopped hard. It returns the deregistration's error,
// or ctx's. Idempotent.
func (s *Serving) GracefulStop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		err := s.reg.Deregister(ctx)
		if errors.Is(err, registry.ErrClosed) {
			err = nil
		}
		t := time.NewTimer(s.o.drain)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		stopped := make(chan struct{})
		go func() { // joined below
			defer close(stopped)
			s.srv.GracefulStop()
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			s.srv.Stop()
			<-stopped
			err = errors.Join(err, ctx.Err())
		}
		<-s.done
		s.stopErr = err
	})
	return s.stopErr
}

// Stop deregisters (with a short timeout) and stops the server at once,
// failing RPCs in flight. Idempotent, and a no-op after GracefulStop.
func (s *Serving) Stop() error {
	s.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := s.reg.Deregister(ctx)
		if errors.Is(err, registry.ErrClosed) {
			err = nil
		}
		s.srv.Stop()
		<-s.done
		s.stopErr = err
	})
	return s.stopErr
}
