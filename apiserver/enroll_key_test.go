package apiserver_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass/connector/httpsenroll"
	"github.com/fieldpass/fieldpass/tunnel"
)

// TestEnrollRefusesWeakKeys: a device key that is a low-order point makes
// every Diffie-Hellman with it all zeros (no secret at all), and one equal
// to the broker's own key would make the broker its own peer (issue 10).
// Both are refused, and the token stays unused.
func TestEnrollRefusesWeakKeys(t *testing.T) {
	db, srv := newServer(t, 100)
	ctx := context.Background()
	tok, _, err := db.CreateEnrollmentToken(ctx, "pump-1", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	s, err := httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: srv.URL, Token: tok, StateDir: filepath.Join(t.TempDir(), "state")})
	if err != nil {
		t.Fatal(err)
	}
	lowOrder := func(h string) string {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	for i, tt := range []struct{ name, key string }{
		{"broker's own key", s.BrokerKey},
		{"one", lowOrder("0100000000000000000000000000000000000000000000000000000000000000")},
		{"order 8", lowOrder("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")},
		{"order 8, other", lowOrder("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157")},
		{"p-1", lowOrder("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")},
		{"p", lowOrder("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")},
		{"p+1", lowOrder("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")},
		{"order 8, high bit", lowOrder("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tok, _, err := db.CreateEnrollmentToken(ctx, fmt.Sprintf("weak-%d", i), nil, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(tunnel.EnrollRequest{Token: tok, PublicKey: tt.key})
			code, e := post(t, srv.URL, "application/json", string(b))
			if code != http.StatusBadRequest {
				t.Fatalf("status %d (%+v), want 400", code, e)
			}
			t.Logf("refused: %s", e.Message)
		})
	}
	if devs, _ := db.Devices(ctx); len(devs) != 1 {
		t.Fatalf("%d devices, want only pump-1", len(devs))
	}
}
