package apiserver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/apiserver"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
	"github.com/fieldpass/fieldpass/tunnel"
	"github.com/fieldpass/fieldpass/wgnet"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func newServer(t *testing.T, burst int) (*postgres.DB, *httptest.Server) {
	t.Helper()
	db, err := postgres.Open(context.Background(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	api := apiserver.New(apiserver.Config{
		DB: db,
		Tunnel: apiserver.TunnelInfo{
			BrokerKey:     mustKey(t).Public().String(),
			BrokerAddress: netip.MustParseAddr("10.77.0.1"),
			Prefix:        netip.MustParsePrefix("10.77.0.0/16"),
			Endpoints:     []string{"127.0.0.1:51820"},
			MTU:           1280,
		},
		EnrollRate:  1,
		EnrollBurst: burst,
	})
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return db, srv
}

func mustKey(t *testing.T) wgnet.Key {
	k, err := wgnet.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func post(t *testing.T, url, contentType, body string) (int, tunnel.ErrorResponse) {
	t.Helper()
	resp, err := http.Post(url+tunnel.EnrollPath, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e tunnel.ErrorResponse
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

func enrollBody(t *testing.T, token string) string {
	b, _ := json.Marshal(tunnel.EnrollRequest{Token: token, PublicKey: mustKey(t).Public().String()})
	return string(b)
}

func TestEnrollHappyPathAndReuse(t *testing.T) {
	db, srv := newServer(t, 100)
	ctx := context.Background()
	tok, _, err := db.CreateEnrollmentToken(ctx, "pump-7", map[string]string{"site": "north"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "state")
	s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: tok, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if s.DeviceName != "pump-7" || s.TunnelAddress.String() != "10.77.0.2" || s.BrokerPort != tunnel.BrokerPort {
		t.Fatalf("state %+v", s)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, "private.key"): 0o600, filepath.Join(dir, "state.json"): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", path, got, want)
		}
	}
	// The private key stays on the device: the broker holds the public half.
	d, err := db.Device(ctx, "pump-7")
	if err != nil {
		t.Fatal(err)
	}
	if d.PublicKey != s.PrivateKey.Public().String() {
		t.Fatalf("broker key %s, want the device's public key", d.PublicKey)
	}
	loaded, err := connector.LoadState(dir)
	if err != nil || loaded.PrivateKey != s.PrivateKey {
		t.Fatalf("LoadState: %v", err)
	}

	// Reused: refused, and nothing written on the device.
	dir2 := filepath.Join(t.TempDir(), "state")
	_, err = httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: tok, StateDir: dir2})
	if fieldpass.ErrorCode(err) != fieldpass.ECONFLICT || !strings.Contains(err.Error(), "already used") {
		t.Fatalf("reused token: err %v, want conflict 'already used'", err)
	}
	if _, err := os.Stat(dir2); !os.IsNotExist(err) {
		t.Fatalf("failed enrolment created %s", dir2)
	}
	// An existing enrolment is never overwritten.
	tok2, _, _ := db.CreateEnrollmentToken(ctx, "pump-8", nil, time.Hour)
	if _, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: tok2, StateDir: dir}); fieldpass.ErrorCode(err) != fieldpass.ECONFLICT {
		t.Fatalf("enrol into a used state dir: err %v, want conflict", err)
	}
	if devs, _ := db.Devices(ctx); len(devs) != 1 {
		t.Fatalf("%d devices, want 1", len(devs))
	}
}

func TestEnrollRefusals(t *testing.T) {
	db, srv := newServer(t, 100)
	ctx := context.Background()
	db.Now = func() time.Time { return time.Now().Add(-2 * time.Hour) }
	expired, _, err := db.CreateEnrollmentToken(ctx, "old", nil, time.Hour)
	db.Now = nil
	if err != nil {
		t.Fatal(err)
	}
	var unknown [32]byte
	rand.Read(unknown[:])
	tests := []struct {
		name, token, code string
	}{
		{"expired", expired, fieldpass.EEXPIRED},
		{"unknown", fieldpass.FormatEnrollmentToken(unknown), fieldpass.ENOTFOUND},
		{"malformed", "fpe_not-a-token", fieldpass.EINVALID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			_, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: tt.token, StateDir: dir})
			if fieldpass.ErrorCode(err) != tt.code {
				t.Fatalf("err %v, want code %s", err, tt.code)
			}
			if strings.Contains(err.Error(), tt.token) && tt.name != "malformed" {
				t.Fatal("error message repeats the token")
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatal("failed enrolment wrote state")
			}
		})
	}
	if devs, _ := db.Devices(ctx); len(devs) != 0 {
		t.Fatalf("%d devices after refused enrolments, want 0", len(devs))
	}
}

func TestEnrollBadRequests(t *testing.T) {
	db, srv := newServer(t, 100)
	tok, _, _ := db.CreateEnrollmentToken(context.Background(), "x", nil, time.Hour)
	valid := enrollBody(t, tok)
	tests := []struct {
		name, ct, body string
		status         int
	}{
		{"wrong content type", "text/plain", valid, 400},
		{"not json", "application/json", "{", 400},
		{"unknown field", "application/json", `{"token":"` + tok + `","public_key":"x","admin":true}`, 400},
		{"trailing data", "application/json", valid + valid, 400},
		{"oversize", "application/json", `{"token":"` + strings.Repeat("a", 10<<10) + `"}`, 400},
		{"bad key", "application/json", `{"token":"` + tok + `","public_key":"AAAA"}`, 400},
		{"zero key", "application/json", `{"token":"` + tok + `","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, e := post(t, srv.URL, tt.ct, tt.body)
			if status != tt.status || e.Message == "" {
				t.Fatalf("status %d %+v, want %d with a message", status, e, tt.status)
			}
		})
	}
	// None of that used the token up.
	if status, e := post(t, srv.URL, "application/json", valid); status != 200 {
		t.Fatalf("valid enrolment after bad requests: %d %+v", status, e)
	}
	if resp, _ := http.Get(srv.URL + tunnel.EnrollPath); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET enroll: %d, want 405", resp.StatusCode)
	}
}

// TestEnrollRace: fifty connectors racing with one token; exactly one wins.
func TestEnrollRace(t *testing.T) {
	db, srv := newServer(t, 100)
	tok, _, _ := db.CreateEnrollmentToken(context.Background(), "race", nil, time.Hour)
	var wg sync.WaitGroup
	codes := make(chan int, 50)
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(srv.URL+tunnel.EnrollPath, "application/json", bytes.NewReader([]byte(enrollBody(t, tok))))
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	count := map[int]int{}
	for c := range codes {
		count[c]++
	}
	if count[200] != 1 || count[409] != 49 {
		t.Fatalf("statuses %v, want exactly one 200 and 49 409", count)
	}
}

func TestEnrollRateLimited(t *testing.T) {
	_, srv := newServer(t, 3)
	var last int
	for i := 0; i < 5; i++ {
		last, _ = post(t, srv.URL, "application/json", `{}`)
	}
	if last != http.StatusTooManyRequests {
		t.Fatalf("5th request in a burst of 3: status %d, want 429", last)
	}
}

func TestPlainHTTPOnlyToLoopback(t *testing.T) {
	var raw [32]byte
	_, err := httpsenroll.Enroll(context.Background(), httpsenroll.Config{
		BrokerURL: "http://broker.example.com", Token: fieldpass.FormatEnrollmentToken(raw), StateDir: t.TempDir() + "/s",
	})
	if fieldpass.ErrorCode(err) != fieldpass.EINVALID || !strings.Contains(err.Error(), "https") {
		t.Fatalf("err %v, want invalid asking for https", err)
	}
}
