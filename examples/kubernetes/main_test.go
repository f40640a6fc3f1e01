package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/regkit/regkit/etcd/embedded"
	"github.com/regkit/regkit/registry"
)

// syncBuffer is a bytes.Buffer safe for the program's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// runPod runs the program with env as the downward API would set it, checks what
// it registered on the etcd at url, stops it as SIGTERM does and checks it
// deregistered.
func runPod(t *testing.T, url string, env map[string]string, wantHost string, wantPort int) {
	t.Helper()
	for _, k := range []string{"REGKIT_REGISTER_HOST", "REGKIT_REGISTER_PORT", "DUBBO_IP_TO_REGISTRY", "DUBBO_PORT_TO_REGISTRY", "POD_NAME"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("REGKIT_URL", url)
	t.Setenv("POD_PORT", "0") // a free port: the test's "pod port"
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := registry.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	pctx, stop := context.WithCancel(ctx)
	var out syncBuffer
	registered := make(chan registry.Instance, 1)
	done := make(chan error, 1)
	go func() { done <- run(pctx, &out, registered) }()
	var in registry.Instance
	select {
	case in = <-registered:
	case err := <-done:
		t.Fatalf("program ended: %v\n%s", err, out.String())
	case <-ctx.Done():
		t.Fatalf("never registered\n%s", out.String())
	}
	got, err := c.Instances(ctx, "greeter")
	if err != nil || len(got) != 1 {
		t.Fatalf("registry has %v, %v", got, err)
	}
	g := got[0]
	if g.Host != wantHost || g.Port != wantPort || g.ID != env["POD_NAME"] || g.Metadata["pod.port"] == "" || g.Metadata["pod.port"] == "0" {
		t.Errorf("registered %+v, want %s:%d with ID %s and the bound port in metadata", g, wantHost, wantPort, env["POD_NAME"])
	}
	if in.Addr() != g.Addr() {
		t.Errorf("program says %s, registry has %s", in.Addr(), g.Addr())
	}
	stop() // SIGTERM
	if err := <-done; err != nil {
		t.Fatalf("program: %v\n%s", err, out.String())
	}
	if got, _ := c.Instances(ctx, "greeter"); len(got) != 0 {
		t.Errorf("still registered after SIGTERM: %v", got)
	}
	for _, want := range []string{"listening on :", "registered greeter " + env["POD_NAME"] + " at " + g.Addr(), "deregistered " + env["POD_NAME"]} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestKubernetesExample(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := embedded.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	t.Run("regkit-vars", func(t *testing.T) {
		runPod(t, srv.URL("k8s-a"), map[string]string{"POD_NAME": "greeter-7d9f-abcde",
			"REGKIT_REGISTER_HOST": "10.1.2.3", "REGKIT_REGISTER_PORT": "30080"}, "10.1.2.3", 30080)
	})
	t.Run("dubbo-vars", func(t *testing.T) {
		runPod(t, srv.URL("k8s-b"), map[string]string{"POD_NAME": "greeter-7d9f-fghij",
			"DUBBO_IP_TO_REGISTRY": "10.4.5.6", "DUBBO_PORT_TO_REGISTRY": "30081"}, "10.4.5.6", 30081)
	})
	t.Run("regkit-vars-win", func(t *testing.T) {
		runPod(t, srv.URL("k8s-c"), map[string]string{"POD_NAME": "greeter-7d9f-klmno",
			"REGKIT_REGISTER_HOST": "10.7.8.9", "DUBBO_IP_TO_REGISTRY": "10.0.0.99",
			"DUBBO_PORT_TO_REGISTRY": "30082"}, "10.7.8.9", 30082)
	})
}

// The manifest passes what the program reads.
func TestManifest(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(".", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"REGKIT_REGISTER_HOST", "status.hostIP", "REGKIT_REGISTER_PORT", "nodePort: 30080",
		`value: "30080"`, "POD_PORT", "metadata.name", "containerPort: 8080", "externalTrafficPolicy: Local"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("deployment.yaml lacks %q", want)
		}
	}
}
