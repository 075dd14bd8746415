package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestServeHelpNamesMetricsListen(t *testing.T) {
	out, errOut, err := runCmd(t, "", "serve", "-h")
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("got %v", err)
	}
	help := out + errOut
	for _, want := range []string{"-metrics-listen address", "Prometheus /metrics, /healthz and /readyz", "(default: off)"} {
		if !strings.Contains(help, want) {
			t.Errorf("serve -h lacks %q; got:\n%s", want, help)
		}
	}
}

// TestServeMetricsListen starts serve with --metrics-listen and reads the
// metrics and probes from that listener.
func TestServeMetricsListen(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		getenv := func(k string) string {
			if k == "FIELDPASS_DATABASE_URL" {
				return dbURL
			}
			return ""
		}
		done <- run(ctx, []string{"serve", "--public-url", "https://fieldpass.example.com",
			"--http-listen", "127.0.0.1:0", "--wg-listen", "127.0.0.1:0", "--metrics-listen", addr,
			"--key-file", filepath.Join(t.TempDir(), "broker.key")}, getenv, io.Discard, io.Discard)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	get := func(path string) (int, string, error) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body, err := get("/readyz")
		if err == nil && code == http.StatusOK && body == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /readyz on the metrics listener: got %d %q, %v; want 200 ready", code, body, err)
		}
		select {
		case err := <-done:
			done <- err
			t.Fatalf("serve exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	code, body, err := get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: got %d, %v", code, err)
	}
	for _, want := range []string{"fieldpass_devices_online 0\n", "fieldpass_sessions_active 0\n", "go_goroutines "} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if code, body, err := get("/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("GET /healthz: got %d %q, %v", code, body, err)
	}
}

// TestServeProxyProtocolNeedsBalancers: --proxy-protocol without the
// balancers' addresses would believe nobody or everybody: refused at once.
func TestServeProxyProtocolNeedsBalancers(t *testing.T) {
	_, _, err := runCmd(t, "", "serve", "--database-url", "postgres://x@127.0.0.1:1/x", "--public-url", "https://broker.example.com", "--proxy-protocol")
	if err == nil || !strings.Contains(err.Error(), "--trusted-proxy") {
		t.Fatalf("serve --proxy-protocol alone: %v; want a refusal naming --trusted-proxy", err)
	}
}
