package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/wgnet/wgtest"
)

// TestServeTUNName: a --tun value that cannot be an interface name is
// refused before anything starts.
func TestServeTUNName(t *testing.T) {
	for _, name := range []string{"a/b", "fieldpass-tunnel0", "tun 0"} {
		_, _, err := runCmd(t, "postgres://x@127.0.0.1:1/x", "serve", "--public-url", "https://broker.example.com", "--tun", name)
		if err == nil || !strings.Contains(err.Error(), "--tun") {
			t.Errorf("serve --tun %q: %v; want a refusal naming --tun", name, err)
		}
	}
}

// TestServeTUN runs serve --tun in a network namespace of the test's own:
// the interface is there with the broker's address while it serves, and
// gone once it stops; a name already taken stops serve with a message
// saying so.
func TestServeTUN(t *testing.T) {
	if !wgtest.InNetns() {
		wgtest.RunInNetns(t, []string{"-test.run=^TestServeTUN$", "-test.count=1"})
		return
	}
	dbURL := pgtest.NewDatabase(t)
	keyFile := filepath.Join(t.TempDir(), "broker.key")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ops := ln.Addr().String()
	ln.Close()
	serve := func(ctx context.Context, name string, logs io.Writer) error {
		getenv := func(k string) string {
			if k == "FIELDPASS_DATABASE_URL" {
				return dbURL
			}
			return ""
		}
		return run(ctx, []string{"serve", "--public-url", "https://fieldpass.example.com", "--tunnel-prefix", "10.99.0.0/16",
			"--http-listen", "127.0.0.1:0", "--wg-listen", "127.0.0.1:0", "--metrics-listen", ops, "--init", "--key-file", keyFile, "--tun", name}, getenv, io.Discard, logs)
	}

	t.Run("name taken", func(t *testing.T) {
		// A persistent TUN interface, as another program may have left.
		if out, err := exec.Command("ip", "tuntap", "add", "fptaken0", "mode", "tun").CombinedOutput(); err != nil {
			t.Fatalf("ip link add: %v: %s", err, out)
		}
		err := serve(t.Context(), "fptaken0", io.Discard)
		if err == nil || !strings.Contains(err.Error(), `--tun fptaken0: new kernel device: an interface named "fptaken0" already exists`) {
			t.Fatalf("serve --tun on a taken name: %v", err)
		}
	})

	var logs bytes.Buffer // read only once serve has returned
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, "fpserve0", &logs) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + ops + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve --tun not ready after 20s: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	ifc, err := net.InterfaceByName("fpserve0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := ifc.Addrs()
	if len(addrs) != 1 || addrs[0].String() != "10.99.0.1/16" || ifc.Flags&net.FlagUp == 0 {
		t.Errorf("fpserve0: addresses %v, flags %v; want 10.99.0.1/16 only, up", addrs, ifc.Flags)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if _, err := net.InterfaceByName("fpserve0"); err == nil {
		t.Error("interface fpserve0 still there after serve stopped")
	}
	if !strings.Contains(logs.String(), "WireGuard on a kernel TUN interface") {
		t.Errorf("serve did not log its TUN interface:\n%s", logs.String())
	}
}
