package cafile_test

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/cmd/internal/cafile"
)

// A broker whose certificate comes from a private CA is reached with that
// CA's file, and refused without it.
func TestHTTPClientTrustsTheFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := cafile.HTTPClient(path, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatalf("with the CA file: %v", err)
	}
	resp.Body.Close()
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL); err == nil {
		t.Fatal("without the CA file the private certificate was trusted")
	}
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	if _, err := cafile.HTTPClient(bad, time.Second); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a file without a certificate: %v", err)
	}
	if c, err := cafile.HTTPClient("", time.Second); c != nil || err != nil {
		t.Errorf("no path: %v, %v; want nil, nil", c, err)
	}
}
