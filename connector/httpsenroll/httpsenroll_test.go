package httpsenroll_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

// enrolBroker is a TLS server answering enrolments as the broker's API
// does: the answer for a good token, a JSON error for any other. It records
// the request it saw.
func enrolBroker(t *testing.T, seen *http.Request, body *tunnel.EnrollRequest) *httptest.Server {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*seen = *r
		if err := json.NewDecoder(r.Body).Decode(body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if body.Token != goodToken {
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(tunnel.ErrorResponse{Code: fieldpass.EFORBIDDEN, Message: "this enrolment token was already used: create a new one"})
			return
		}
		bk, _ := wgnet.GenerateKey(strings.NewReader(strings.Repeat("k", 64)))
		json.NewEncoder(w).Encode(tunnel.EnrollResponse{
			DeviceID: "0f8fad5b-d9cb-469f-a165-70867728950e", DeviceName: "pump-1",
			TunnelAddress: "10.77.0.2", BrokerAddress: "10.77.0.1", BrokerPort: tunnel.BrokerPort,
			BrokerKey: bk.Public().String(), Endpoints: []string{"192.0.2.1:51820"}, MTU: 1280,
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

var goodToken = fieldpass.FormatEnrollmentToken([32]byte{1, 2, 3})

// Enrolment speaks HTTPS without net/http (connector/enroll.go): it must
// reach a real TLS server, trusting only what it is told to, and read both
// its answers and its errors.
func TestEnrollOverTLS(t *testing.T) {
	var seen http.Request
	var body tunnel.EnrollRequest
	srv := enrolBroker(t, &seen, &body)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	ctx := context.Background()

	dir := filepath.Join(t.TempDir(), "state")
	s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL + "/fp", Token: goodToken, StateDir: dir, RootCAs: roots})
	if err != nil {
		t.Fatalf("enrol: %v", err)
	}
	if s.DeviceName != "pump-1" || s.TunnelAddress.String() != "10.77.0.2" || len(s.Endpoints) != 1 {
		t.Fatalf("state %+v", s)
	}
	if seen.Method != "POST" || seen.URL.Path != "/fp"+tunnel.EnrollPath || seen.Proto != "HTTP/1.0" ||
		seen.Header.Get("Content-Type") != "application/json" || seen.TLS == nil {
		t.Fatalf("request: %s %s %s %v, tls %v", seen.Method, seen.URL, seen.Proto, seen.Header, seen.TLS != nil)
	}
	if body.Token != goodToken || body.PublicKey != s.PrivateKey.Public().String() {
		t.Fatalf("body %+v", body)
	}
	if _, err := connector.LoadState(dir); err != nil {
		t.Fatalf("saved state: %v", err)
	}

	// The broker's error, in its words, with its code.
	_, err = httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: fieldpass.FormatEnrollmentToken([32]byte{9}), StateDir: filepath.Join(t.TempDir(), "s"), RootCAs: roots})
	if fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("refused token: %v, want forbidden in the broker's words", err)
	}

	// A certificate nobody vouches for is refused.
	_, err = httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: goodToken, StateDir: filepath.Join(t.TempDir(), "s")})
	if fieldpass.ErrorCode(err) != fieldpass.EUNAVAILABLE || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("untrusted certificate: %v, want unavailable naming the certificate", err)
	}
}
