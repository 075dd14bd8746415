package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cliexit"

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

	keyFile := filepath.Join(t.TempDir(), "broker.key")
	var logs bytes.Buffer // read only once serve has returned
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
			"--init", "--key-file", keyFile}, getenv, io.Discard, &logs)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		// Where the key lives is said at start, and that it is new.
		if !strings.Contains(logs.String(), "key_file="+keyFile) || !strings.Contains(logs.String(), "created the broker's WireGuard key") {
			t.Errorf("serve --init did not log the new key's path %s:\n%s", keyFile, logs.String())
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

// TestServeNeedsInit: serve never creates the broker's key by itself; the
// error names the path and the command that would create it, and nothing
// is written.
func TestServeNeedsInit(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "state", "broker.key")
	_, _, err := runCmd(t, "postgres://nobody@127.0.0.1:1/none", "serve", "--public-url", "https://fieldpass.example.com",
		"--http-listen", "127.0.0.1:0", "--wg-listen", "127.0.0.1:0", "--key-file", keyFile)
	if err == nil || !strings.Contains(cliexit.Message(err), keyFile+" does not exist") || !strings.Contains(cliexit.Message(err), "fieldpass-broker serve --init") {
		t.Fatalf("serve without a key: %v; want an error naming %s and serve --init", err, keyFile)
	}
	if _, err := os.Stat(filepath.Dir(keyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve without --init created %s: %v", filepath.Dir(keyFile), err)
	}
}
