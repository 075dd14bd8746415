package postgres_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/alerts"
	"github.com/fieldpass/fieldpass/postgres"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

// roles is a database whose schema was migrated by an owner role (neither
// the superuser nor the broker), with a broker role granted by
// GrantBrokerRole, as deploy/README.md sets one up.
type roles struct {
	owner, broker, super  *postgres.DB
	ownerRole, brokerRole string
	ownerURL              string
	brokerConn            *pgx.Conn // as the broker role, behind the store's back
}

func mustRoles(tb testing.TB) *roles {
	tb.Helper()
	ctx := context.Background()
	// Roles first: they are dropped after the database that refers to them.
	r := &roles{ownerRole: pgtest.NewRole(tb, "fp_owner"), brokerRole: pgtest.NewRole(tb, "fp_broker")}
	superURL := pgtest.NewEmptyDatabase(tb, r.ownerRole)
	open := func(url string) *postgres.DB {
		db, err := postgres.Open(ctx, url)
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		tb.Cleanup(db.Close)
		return db
	}
	r.ownerURL = pgtest.URLAs(tb, superURL, r.ownerRole)
	r.owner = open(r.ownerURL)
	if err := r.owner.Migrate(ctx); err != nil {
		tb.Fatalf("Migrate as the owner: %v", err)
	}
	if err := r.owner.GrantBrokerRole(ctx, r.brokerRole); err != nil {
		tb.Fatalf("GrantBrokerRole: %v", err)
	}
	brokerURL := pgtest.URLAs(tb, superURL, r.brokerRole)
	r.broker = open(brokerURL)
	r.super = open(superURL)
	conn, err := pgx.Connect(ctx, brokerURL)
	if err != nil {
		tb.Fatalf("connect as the broker role: %v", err)
	}
	tb.Cleanup(func() { conn.Close(context.Background()) })
	r.brokerConn = conn
	return r
}

func TestGrantBrokerRole(t *testing.T) {
	t.Parallel()
	r := mustRoles(t)
	ctx := t.Context()
	if _, err := r.broker.AppendAudit(ctx, fieldpass.AuditEvent{Actor: "operator:root@host", Action: fieldpass.AuditTokenCreate, Target: "device:pump-7"}); err != nil {
		t.Fatalf("AppendAudit as the broker role: %v", err)
	}

	t.Run("broker cannot alter the audit log", func(t *testing.T) {
		for _, q := range []string{
			"ALTER TABLE audit_events DISABLE TRIGGER USER",
			"ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
			"ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete",
			"DROP TRIGGER audit_events_no_update_delete ON audit_events",
			"DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints",
			"DROP TABLE audit_events",
			"ALTER TABLE audit_events RENAME TO old_audit_events",
			"ALTER TABLE audit_events OWNER TO CURRENT_USER",
			"CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
			"UPDATE audit_events SET actor = 'someone-else'",
			"DELETE FROM audit_events",
			"TRUNCATE audit_events",
			"UPDATE audit_checkpoints SET seq = 1",
			"DELETE FROM audit_checkpoints",
			"DELETE FROM devices",
			"TRUNCATE sessions",
			"UPDATE alert_dead_letters SET attempts = 0",
			"DELETE FROM alert_replays",
			"CREATE TABLE public.mine (id int)",
			"INSERT INTO goose_db_version (version_id, is_applied) VALUES (99999, true)",
		} {
			_, err := r.brokerConn.Exec(ctx, q)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("%s: got %v, want permission denied (42501)", q, err)
			}
		}
		if n, err := r.broker.VerifyAudit(ctx); err != nil || n != 1 {
			t.Errorf("VerifyAudit: got %d, %v, want 1, nil", n, err)
		}
	})

	t.Run("CanAlterAudit", func(t *testing.T) {
		for _, tc := range []struct {
			who  string
			db   *postgres.DB
			want bool
		}{{"broker", r.broker, false}, {"owner", r.owner, true}, {"superuser", r.super, true}} {
			if got, err := tc.db.CanAlterAudit(ctx); err != nil || got != tc.want {
				t.Errorf("%s: got %v, %v, want %v", tc.who, got, err, tc.want)
			}
		}
	})

	// Every table is reachable, and none but the retained ones (recordings
	// and web request logs, deleted past their retention) and the transient
	// ones (device logins in progress) can have rows removed: a new table in a migration must be added to the lists in
	// role.go.
	t.Run("every table listed", func(t *testing.T) {
		tables := func(q string) []string {
			t.Helper()
			rows, err := r.brokerConn.Query(ctx, `SELECT relname::text FROM pg_class
				WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') AND `+q+` ORDER BY 1`, r.brokerRole)
			if err != nil {
				t.Fatal(err)
			}
			names, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			return names
		}
		if got := tables(`NOT has_table_privilege($1, oid, 'SELECT')`); len(got) > 0 {
			t.Errorf("tables the broker cannot read: %v (list them in role.go)", got)
		}
		if got := tables(`has_table_privilege($1, oid, 'TRUNCATE, REFERENCES, TRIGGER')`); len(got) > 0 {
			t.Errorf("tables the broker may truncate, reference or put triggers on: %v", got)
		}
		if got, want := tables(`has_table_privilege($1, oid, 'DELETE')`), []string{"device_callbacks", "device_login_clients", "device_logins", "recording_chunks", "recordings", "web_requests"}; !slices.Equal(got, want) {
			t.Errorf("tables the broker may delete from: %v, want only %v", got, want)
		}
	})

	t.Run("idempotent and exact", func(t *testing.T) {
		ident := pgx.Identifier{r.brokerRole}.Sanitize()
		owner, err := pgx.Connect(ctx, r.ownerURL)
		if err != nil {
			t.Fatal(err)
		}
		defer owner.Close(ctx)
		for _, q := range []string{"GRANT DELETE ON devices TO " + ident, "GRANT UPDATE ON audit_events TO " + ident, "GRANT CREATE ON SCHEMA public TO " + ident} {
			if _, err := owner.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for range 2 {
			if err := r.owner.GrantBrokerRole(ctx, r.brokerRole); err != nil {
				t.Fatalf("GrantBrokerRole again: %v", err)
			}
		}
		var extra bool
		err = r.brokerConn.QueryRow(ctx, `SELECT has_table_privilege('devices', 'DELETE') OR has_table_privilege('audit_events', 'UPDATE')
			OR has_schema_privilege('public', 'CREATE')`).Scan(&extra)
		if err != nil || extra {
			t.Errorf("privileges granted by hand survived GrantBrokerRole: %v, %v", extra, err)
		}
	})

	t.Run("refused roles", func(t *testing.T) {
		for _, tc := range []struct {
			role, code, msg string
		}{
			{"fp_nobody_has_this_role", fieldpass.ENOTFOUND, "create it first: CREATE ROLE fp_nobody_has_this_role LOGIN PASSWORD"},
			{`x"; DROP TABLE audit_events; --`, fieldpass.EINVALID, "lowercase letters"},
			{"Broker", fieldpass.EINVALID, "lowercase letters"},
			{"pg_monitor", fieldpass.EINVALID, "pg_"},
			{"", fieldpass.EINVALID, "role name"},
			{pgtest.Superuser, fieldpass.EINVALID, "superuser"},
			{r.ownerRole, fieldpass.EINVALID, "owns the tables"},
		} {
			wantError(t, r.owner.GrantBrokerRole(ctx, tc.role), tc.code, tc.msg)
		}
	})
}

// TestBrokerRoleFlows runs what a broker and the admin commands do,
// connected as the broker role: its grants are enough.
func TestBrokerRoleFlows(t *testing.T) {
	t.Parallel()
	db := mustRoles(t).broker
	ctx := t.Context()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s as the broker role: %v", what, err)
		}
	}

	tok, _, err := db.CreateEnrollmentToken(ctx, "pump-1", map[string]string{"site": "north"}, time.Hour)
	must("CreateEnrollmentToken", err)
	dev, err := db.Enroll(ctx, tok, key(1), "v1.0.0", addr)
	must("Enroll", err)
	_, err = db.SetDeviceState(ctx, "pump-1", fieldpass.DeviceDisabled)
	must("SetDeviceState", err)
	_, err = db.SetDeviceStateAudited(ctx, "operator:root@host", "pump-1", fieldpass.DeviceActive)
	must("SetDeviceStateAudited", err)
	must("UpdatePresence", db.UpdatePresence(ctx, dev.ID, fieldpass.Presence{Online: true, LastSeen: time.Now(), Endpoint: "203.0.113.7:51820", ConnectorVersion: "v1.0.0", BrokerID: "broker-1"}))
	must("TouchDevices", db.TouchDevices(ctx, []string{dev.ID}, time.Now()))

	_, err = db.EnsureUser(ctx, "oidc", "eng@example.com", []fieldpass.Role{fieldpass.RoleEngineer})
	must("EnsureUser", err)
	_, err = db.EnsureUser(ctx, "oidc", "boss@example.com", []fieldpass.Role{fieldpass.RoleApprover})
	must("EnsureUser", err)
	secret, _, err := db.IssueToken(ctx, "operator:root@host", "eng@example.com", fieldpass.TokenCLI, time.Hour)
	must("IssueToken", err)
	_, _, err = db.Authenticate(ctx, secret)
	must("Authenticate", err)

	g, err := db.CreateGrant(ctx, "operator:root@host", fieldpass.Grant{
		Subject: "eng@example.com", Devices: []string{"pump-1"}, Services: []string{"ssh"}, End: time.Now().Add(time.Hour), Reason: "maintenance",
	}, week)
	must("CreateGrant", err)
	open := func() *fieldpass.Session {
		t.Helper()
		s, err := db.OpenSession(ctx, fieldpass.Session{User: "eng@example.com", Device: "pump-1", Service: "ssh", GrantID: g.ID, BrokerID: "broker-1"})
		must("OpenSession", err)
		return s
	}
	s := open()
	_, err = db.EndSession(ctx, s.ID, time.Now(), 10, 20, fieldpass.EndClientClosed)
	must("EndSession", err)
	open()
	n, err := db.CloseOpenSessions(ctx, "broker-1", fieldpass.EndBrokerRestart)
	must("CloseOpenSessions", err)
	if n != 1 {
		t.Errorf("CloseOpenSessions: closed %d, want 1", n)
	}
	_, err = db.RevokeGrant(ctx, "operator:root@host", g.ID)
	must("RevokeGrant", err)

	req, err := db.CreateRequest(ctx, fieldpass.AccessRequest{Requester: "eng@example.com", Device: "pump-1", Service: "ssh", Duration: time.Hour, Reason: "alarm 17"})
	must("CreateRequest", err)
	_, _, err = db.DecideRequest(ctx, "boss@example.com", req.ID, true, week, "")
	must("DecideRequest", err)
	_, err = db.SetUserDisabled(ctx, "operator:root@host", "eng@example.com", true)
	must("SetUserDisabled", err)
	must("MarkBrokerOffline", db.MarkBrokerOffline(ctx, "broker-1"))
	must("RecordAlertDeadLetter", db.RecordAlertDeadLetter(ctx, fieldpass.DeadLetter{
		ID: "0123abcd", Kind: alerts.DeviceEnrolled, Payload: []byte(`{"id":"0123abcd"}`), Attempts: 3, LastError: "webhook answered 500",
	}))
	must("RecordAlertReplay", db.RecordAlertReplay(ctx, "operator:root@host", "0123abcd", "https://hooks.example.com/..."))
	letters, err := db.AlertDeadLetters(ctx, fieldpass.DeadLetterFilter{Unreplayed: true})
	must("AlertDeadLetters", err)
	if len(letters) != 0 {
		t.Errorf("unreplayed dead letters after a replay: got %d, want 0", len(letters))
	}
	_, err = db.LastPresenceEvents(ctx, []string{dev.ID})
	must("LastPresenceEvents", err)

	_, err = db.CheckpointAudit(ctx, testKey())
	must("CheckpointAudit", err)
	_, err = db.AuditCheckpoints(ctx, 0)
	must("AuditCheckpoints", err)
	checked, err := db.VerifyAudit(ctx)
	must("VerifyAudit", err)
	if checked == 0 {
		t.Error("VerifyAudit checked no events: the flows above recorded none")
	}
}
