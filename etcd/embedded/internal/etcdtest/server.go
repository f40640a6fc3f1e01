// Package etcdtest starts a real single-member etcd server in-process for the etcd
// backend's tests (package internal/testenv holds the other servers and the fault
// proxy). It lives in the etcd/embedded module so that the etcd server and its
// dependencies stay out of the root module's requirements.
package etcdtest

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/internal/testenv"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"golang.org/x/crypto/bcrypt"
)

// Option adjusts the embedded etcd configuration before it starts.
type Option func(*embed.Config)

// WithConfig lets a test change any field of the embedded etcd configuration.
func WithConfig(f func(*embed.Config)) Option { return Option(f) }

// Server is a real single-member etcd server running in-process (embed).
type Server struct {
	clientPort, peerPort int
	dir                  string
	opts                 []Option

	mu sync.Mutex
	e  *embed.Etcd
}

// Start starts an embedded etcd on free 127.0.0.1 client and peer ports, with
// its data under t.TempDir(). It is stopped by t.Cleanup.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{
		clientPort: testenv.FreePort(t),
		peerPort:   testenv.FreePort(t),
		dir:        filepath.Join(t.TempDir(), "etcd"),
		opts:       opts,
	}
	t.Cleanup(s.Stop)
	if err := s.start(); err != nil {
		t.Fatalf("etcdtest: start etcd: %v", err)
	}
	return s
}

// Endpoint is the client address, "127.0.0.1:port".
func (s *Server) Endpoint() string { return fmt.Sprintf("127.0.0.1:%d", s.clientPort) }

func (s *Server) start() error {
	cfg := embed.NewConfig()
	cfg.Name = "testenv"
	cfg.Dir = s.dir
	cu := url.URL{Scheme: "http", Host: s.Endpoint()}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", s.peerPort)}
	cfg.ListenClientUrls = []url.URL{cu}
	cfg.AdvertiseClientUrls = []url.URL{cu}
	cfg.ListenPeerUrls = []url.URL{pu}
	cfg.AdvertisePeerUrls = []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Password checks cost what bcrypt's cost factor says: at etcd's default (10)
	// each authentication takes ~100 ms of CPU, ~1 s under the race detector and
	// several seconds on a loaded 2-core machine, which made auth tests time out
	// inside the client's dial. A test server has no passwords worth protecting,
	// so use the minimum; tests then do not depend on how fast a machine hashes.
	cfg.BcryptCost = uint(bcrypt.MinCost)
	for _, o := range s.opts {
		o(cfg)
	}
	var (
		e   *embed.Etcd
		err error
	)
	// The ports were free a moment ago; after a Stop the kernel may still hold them
	// for a few milliseconds, so retry a bind failure briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err = embed.StartEtcd(cfg)
		if err == nil || !strings.Contains(err.Error(), "address already in use") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // retry interval
	}
	if err != nil {
		return err
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return fmt.Errorf("etcd failed before ready: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return fmt.Errorf("etcd not ready after 60s")
	}
	s.mu.Lock()
	s.e = e
	s.mu.Unlock()
	return nil
}

// Stop stops the server (a no-op when it is already stopped).
func (s *Server) Stop() {
	s.mu.Lock()
	e := s.e
	s.e = nil
	s.mu.Unlock()
	if e != nil {
		e.Close()
	}
}

// Restart stops the server and starts it again on the same ports. With fresh, the
// data dir is wiped first: a server that lost its data.
func (s *Server) Restart(t testing.TB, fresh bool) {
	t.Helper()
	s.Stop()
	if fresh {
		if err := os.RemoveAll(s.dir); err != nil {
			t.Fatalf("etcdtest: wipe etcd data: %v", err)
		}
	}
	if err := s.start(); err != nil {
		t.Fatalf("etcdtest: restart etcd: %v", err)
	}
}
