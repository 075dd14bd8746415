package brokerlink_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
)

// enderHolder is a holder that also ends its sessions at a peer's request
// (brokerlink.Ender), as the broker's Sessions do.
type enderHolder struct{ *holder }

func (h enderHolder) EndHeld(ctx context.Context, id string, reason fieldpass.EndReason) (*fieldpass.Session, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.sess {
		if s.rec.ID == id && s.Reason() == "" {
			s.End(reason)
			rec := s.rec
			rec.End, rec.EndReason = time.Now(), s.Reason()
			return &rec, nil
		}
	}
	return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s is not live on broker holder", id)
}

// serve runs a link server for h, certified by fleet as broker-b, and
// returns its address.
func serve(t *testing.T, fleet *ca, h brokerlink.Holder) string {
	t.Helper()
	srv, err := brokerlink.NewServer(h, &tls.Config{
		Certificates: []tls.Certificate{fleet.issue(t, "broker-b")},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: fleet.pool,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go srv.Serve(ctx, ln)
	return ln.Addr().String()
}

func link(t *testing.T, fleet *ca, name, addr string) *brokerlink.Link {
	t.Helper()
	d, err := brokerlink.NewDialer(&tls.Config{Certificates: []tls.Certificate{fleet.issue(t, name)}, RootCAs: fleet.pool, ServerName: "broker-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	l, err := d.Link(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A session opened over broker A's link is ended by broker C, over its own
// link, for an admin: the holder ends it, answers the ended row, and A's
// side learns the reason at once and its person's stream stops.
func TestEndFromAnotherLink(t *testing.T) {
	fleet := newCA(t, "fleet")
	h := enderHolder{&holder{}}
	addr := serve(t, fleet, h)
	ctx := context.Background()
	r, err := link(t, fleet, "broker-a", addr).Open(ctx, brokerlink.OpenRequest{User: "eng@example.com", Device: "pump-1", Service: "ssh", ServedBy: "broker-a"})
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	echo(t, st, "before the end")

	c := link(t, fleet, "broker-c", addr)
	row, err := c.End(ctx, r.ID(), fieldpass.EndByAdmin)
	if err != nil {
		t.Fatalf("end from broker-c: %v", err)
	}
	if row.ID != r.ID() || row.EndReason != fieldpass.EndByAdmin || row.Open() {
		t.Fatalf("answered %+v; want %s ended_by_admin", row, r.ID())
	}
	waitDone(t, r.Done(), "broker-a to learn of the end")
	if r.Reason() != fieldpass.EndByAdmin {
		t.Fatalf("reason at broker-a = %q, want ended_by_admin", r.Reason())
	}
	if d, ok := st.(interface{ SetReadDeadline(time.Time) error }); ok {
		d.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	if _, err := io.ReadAll(st); err != nil {
		t.Fatalf("the person's stream after the end: %v, want EOF", err)
	}

	if _, err := c.End(ctx, r.ID(), fieldpass.EndByAdmin); fieldpass.ErrorCode(err) != fieldpass.ENOTFOUND {
		t.Fatalf("ending it again: %v, want not_found", err)
	}
	if _, err := c.End(ctx, r.ID(), "bored"); fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("an unknown reason: %v, want invalid", err)
	}
}

// A holder that does not end sessions for peers says so.
func TestEndUnsupported(t *testing.T) {
	fleet := newCA(t, "fleet")
	addr := serve(t, fleet, &holder{})
	_, err := link(t, fleet, "broker-c", addr).End(context.Background(), "0b5e6c3e-8d0a-4c55-9f39-1f6f3c8c2a11", fieldpass.EndByAdmin)
	if fieldpass.ErrorCode(err) != fieldpass.EINVALID {
		t.Fatalf("err = %v, want invalid", err)
	}
}
