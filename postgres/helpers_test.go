package postgres_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// store is a store on a fresh database, a plain connection to the same
// database for checking rows behind the store's back, and the store's clock.
type store struct {
	*postgres.DB
	sql   *pgx.Conn
	clock *clock
}

func mustOpen(tb testing.TB) *store {
	tb.Helper()
	url := pgtest.NewDatabase(tb)
	db, err := postgres.Open(context.Background(), url)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(db.Close)
	clk := &clock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
	db.Now = clk.Now
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		tb.Fatalf("connect: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	return &store{DB: db, sql: conn, clock: clk}
}

// clock is a settable clock for the store's Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// count runs a SELECT count(*) query.
func (s *store) count(tb testing.TB, query string, args ...any) int {
	tb.Helper()
	var n int
	if err := s.sql.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// addr maps a sequence number into 100.64.0.0/16, as a broker would into its
// tunnel prefix.
func addr(seq int64) (netip.Addr, error) {
	if seq < 1 || seq > 65533 {
		return netip.Addr{}, fmt.Errorf("tunnel prefix exhausted at %d", seq)
	}
	return netip.AddrFrom4([4]byte{100, 64, byte(seq >> 8), byte(seq)}), nil
}

// key returns a distinct, well-formed WireGuard public key for each n.
func key(n int) string {
	sum := sha256.Sum256([]byte(fmt.Sprint("key", n)))
	return base64.StdEncoding.EncodeToString(sum[:])
}

func (s *store) mustToken(tb testing.TB, name string, labels map[string]string) string {
	tb.Helper()
	token, _, err := s.CreateEnrollmentToken(context.Background(), name, labels, time.Hour)
	if err != nil {
		tb.Fatalf("CreateEnrollmentToken(%s): %v", name, err)
	}
	return token
}

func (s *store) mustEnroll(tb testing.TB, name string, keyN int) *fieldpass.Device {
	tb.Helper()
	dev, err := s.Enroll(context.Background(), s.mustToken(tb, name, nil), key(keyN), "v1.0.0", addr)
	if err != nil {
		tb.Fatalf("Enroll(%s): %v", name, err)
	}
	return dev
}

func (s *store) mustSetState(tb testing.TB, name string, state fieldpass.DeviceState) *fieldpass.Device {
	tb.Helper()
	dev, err := s.SetDeviceState(context.Background(), name, state)
	if err != nil {
		tb.Fatalf("SetDeviceState(%s, %s): %v", name, state, err)
	}
	return dev
}

// wantError checks that err is a *fieldpass.Error with code whose message
// contains msg.
func wantError(tb testing.TB, err error, code, msg string) {
	tb.Helper()
	if got := fieldpass.ErrorCode(err); got != code {
		tb.Fatalf("error: got %v (code %q), want code %q", err, got, code)
	}
	if got := fieldpass.ErrorMessage(err); !strings.Contains(got, msg) {
		tb.Errorf("error message: got %q, want it to contain %q", got, msg)
	}
}
