package broker_test

import (
	"context"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/access"
	"github.com/fieldpass/fieldpass/broker"
	"github.com/fieldpass/fieldpass/broker/brokertest"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/tunnel"
)

// A session served by broker A to a device held by broker B is listed
// live by broker C, with both brokers and its bytes so far, and ended by
// an admin whose request reached broker C (then, for other sessions, A
// and B): the person's stream at A closes within a second, the row says
// ended_by_admin with the bytes the holder counted, and the admin's
// reason and the end are each audited once.
func TestFleetEndSessionFromThirdBroker(t *testing.T) {
	e := brokertest.New(t)
	e.Stop()
	ca := brokertest.NewLinkCA(t)
	a := startFleetBroker(t, e, ca, "broker-a")
	b := startFleetBroker(t, e, ca, "broker-b")
	c := startFleetBroker(t, e, ca, "broker-c")
	ctx := context.Background()

	s := e.Enroll("pump-1")
	e.StartConnector(s, map[string]string{"echo": brokertest.EchoServer(t)}, func(cc *connector.Config) {
		cc.State.Endpoints = []string{netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), b.b.ListenPort()).String()}
	})
	dev, err := e.DB.Device(ctx, "pump-1")
	if err != nil {
		t.Fatal(err)
	}
	brokertest.WaitFor(t, 20*time.Second, "broker-b to hold pump-1", func() bool {
		l, ok, _ := e.DB.DeviceHolder(ctx, dev.ID)
		return ok && l.BrokerID == "broker-b"
	})
	user, err := e.DB.EnsureUser(ctx, testOperator, engineer, []fieldpass.Role{fieldpass.RoleEngineer})
	if err != nil {
		t.Fatal(err)
	}
	adminUser, err := e.DB.EnsureUser(ctx, testOperator, "admin@example.com", []fieldpass.Role{fieldpass.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	admin := &fieldpass.Caller{User: adminUser}
	if _, err := e.DB.CreateGrant(ctx, testOperator, fieldpass.Grant{
		Subject: engineer, Devices: []string{"pump-1"}, Services: []string{"echo"}, End: time.Now().Add(time.Hour), Reason: "test",
	}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	msg := []byte("carried by a, held by b")
	echo := func(st tunnel.HalfCloser) {
		t.Helper()
		if _, err := st.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st, make([]byte, len(msg))); err != nil {
			t.Fatal(err)
		}
	}
	open := func() (*broker.Session, tunnel.HalfCloser) {
		t.Helper()
		sess, err := a.m.Open(ctx, &fieldpass.Caller{User: user}, "pump-1", "echo", "192.0.2.7")
		if err != nil {
			t.Fatalf("open at broker-a: %v", err)
		}
		st, err := sess.Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		echo(st)
		return sess, st
	}

	sess, st := open()
	svcC := access.New(access.Config{DB: e.DB, Sessions: c.m, Logger: brokertest.Logger()})
	// The live list, asked at broker C, has it: served by A, the device on
	// B, with the bytes B counted so far (written every BytesInterval).
	var listed *fieldpass.Session
	brokertest.WaitFor(t, 10*time.Second, "broker-c to list the session with its bytes", func() bool {
		open, err := svcC.Sessions(ctx, admin, fieldpass.SessionFilter{Open: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range open {
			if o.ID == sess.ID() && o.BytesIn == int64(len(msg)) && o.BytesOut == int64(len(msg)) {
				listed = o
			}
		}
		return listed != nil
	})
	if listed.BrokerID != "broker-b" || listed.ServedBy != "broker-a" {
		t.Errorf("listed at broker-c: broker %q served by %q; want broker-b, broker-a", listed.BrokerID, listed.ServedBy)
	}
	echo(st) // more bytes, not yet written when the admin ends it

	endVia := func(t *testing.T, at *fleetBroker, sess *broker.Session, st tunnel.HalfCloser) {
		closed := make(chan time.Time, 1)
		go func() {
			io.Copy(io.Discard, st)
			closed <- time.Now()
		}()
		svc := access.New(access.Config{DB: e.DB, Sessions: at.m, Logger: brokertest.Logger()})
		const why = "pump under maintenance"
		t0 := time.Now()
		out, err := svc.EndSession(ctx, admin, sess.ID(), why)
		if err != nil {
			t.Fatalf("end: %v", err)
		}
		took := time.Since(t0)
		select {
		case at := <-closed:
			t.Logf("the person's stream at broker-a closed %s after the admin asked (the call took %s)", at.Sub(t0), took)
			if at.Sub(t0) > time.Second {
				t.Errorf("the person's stream closed %s after the end was asked; want within a second", at.Sub(t0))
			}
		case <-time.After(time.Second):
			t.Fatal("the person's stream at broker-a is still open a second after the admin ended the session")
		}
		select {
		case <-sess.Done():
		case <-time.After(time.Second):
			t.Fatal("the session at broker-a did not end")
		}
		if sess.Reason() != fieldpass.EndByAdmin {
			t.Errorf("reason at broker-a = %q, want ended_by_admin", sess.Reason())
		}
		if out.EndReason != fieldpass.EndByAdmin || out.Open() {
			t.Errorf("EndSession answered %+v; want the row ended_by_admin", out)
		}
		row, err := e.DB.Session(ctx, sess.ID())
		if err != nil {
			t.Fatal(err)
		}
		if row.EndReason != fieldpass.EndByAdmin || row.BrokerID != "broker-b" || row.ServedBy != "broker-a" {
			t.Errorf("row: reason %q broker %q served by %q; want ended_by_admin, broker-b, broker-a", row.EndReason, row.BrokerID, row.ServedBy)
		}
		// The holder's own counts at the end, not the last ones written.
		if want := int64(2 * len(msg)); row.BytesIn != want || row.BytesOut != want {
			t.Errorf("row bytes in/out = %d/%d, want %d/%d (the holder's counts at the end)", row.BytesIn, row.BytesOut, want, want)
		}
		evs, err := e.DB.AuditEvents(ctx, fieldpass.AuditFilter{Target: postgres.SessionTarget(sess.ID())})
		if err != nil {
			t.Fatal(err)
		}
		count := map[string]int{}
		for _, ev := range evs {
			count[ev.Action]++
			if ev.Action == fieldpass.AuditSessionEndAsked && ev.Details["why"] != why {
				t.Errorf("session.end_asked why = %v, want %q", ev.Details["why"], why)
			}
			if ev.Action == fieldpass.AuditSessionEnd && ev.Details["reason"] != string(fieldpass.EndByAdmin) {
				t.Errorf("session.end details = %v, want reason ended_by_admin", ev.Details)
			}
		}
		if count[fieldpass.AuditSessionEndAsked] != 1 || count[fieldpass.AuditSessionEnd] != 1 {
			t.Errorf("audit: %d session.end_asked and %d session.end; want one each", count[fieldpass.AuditSessionEndAsked], count[fieldpass.AuditSessionEnd])
		}
		// Ending it again is a conflict, wherever asked.
		for _, fb := range []*fleetBroker{a, b, c} {
			if _, err := access.New(access.Config{DB: e.DB, Sessions: fb.m}).EndSession(ctx, admin, sess.ID(), why); fieldpass.ErrorCode(err) != fieldpass.ECONFLICT {
				t.Errorf("second end: %v, want conflict", err)
			}
		}
	}
	t.Run("third broker", func(t *testing.T) { endVia(t, c, sess, st) })
	for _, tc := range []struct {
		name string
		at   *fleetBroker
	}{{"serving broker", a}, {"holding broker", b}} {
		t.Run(tc.name, func(t *testing.T) {
			sess, st := open()
			echo(st)
			endVia(t, tc.at, sess, st)
		})
	}
}
