package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

func TestUnavailable(t *testing.T) {
	// A real failure to connect: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, connectErr := postgres.Open(ctx, "postgres://nobody@"+addr+"/x?sslmode=disable")
	if connectErr == nil {
		t.Fatal("Open of a closed port succeeded")
	}
	_, rawConnectErr := pgconn.Connect(ctx, "postgres://nobody@"+addr+"/x?sslmode=disable")

	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"connect refused", rawConnectErr, true},
		{"connection broke mid-query", fmt.Errorf("authenticate: %w", io.ErrUnexpectedEOF), true},
		{"connection exception", &pgconn.PgError{Code: "08006"}, true},
		{"server shutting down", fieldpass.Errorf(fieldpass.EINTERNAL, "end session: %w", &pgconn.PgError{Code: "57P01"}), true},
		{"syntax error", &pgconn.PgError{Code: "42601"}, false},
		{"unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"plain error", errors.New("no grant covers pump-7/ssh"), false},
	} {
		if got := postgres.Unavailable(c.err); got != c.want {
			t.Errorf("%s (%v): Unavailable = %v, want %v", c.name, c.err, got, c.want)
		}
	}
	t.Logf("Open of a closed port: %v", connectErr)
}
