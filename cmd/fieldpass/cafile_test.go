package main

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrivateCA: a broker whose certificate comes from a private CA is
// reached with FIELDPASS_CA_FILE, and refused without it.
func TestPrivateCA(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("[]"))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{envBroker: srv.URL, envToken: tokenA}
	if r := runCLI(t, vars, "devices"); r.code == 0 {
		t.Fatalf("without the CA file: %+v", r)
	}
	vars[envCAFile] = ca
	if r := runCLI(t, vars, "devices"); r.code != 0 || !strings.Contains(r.stdout, "No device") {
		t.Fatalf("with FIELDPASS_CA_FILE: exit %d, %v, %q", r.code, r.err, r.stdout)
	}
	vars[envCAFile] = "/nonexistent/ca.pem"
	if r := runCLI(t, vars, "devices"); r.code == 0 || !strings.Contains(r.err.Error(), envCAFile) {
		t.Fatalf("a missing CA file: %v, want an error naming %s", r.err, envCAFile)
	}
}
