package postgres

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
)

// The broker's privileges, in one place. The schema belongs to an owner role
// that runs the migrations; serve runs as a role granted only what the
// store's queries need, so that nobody holding the broker's credentials can
// alter the audit tables, disable or drop their triggers, or drop them.
//
// A table added by a migration must be listed here, or the broker cannot
// reach it (TestGrantBrokerRole checks that every table is listed).
var (
	// brokerTables are read, inserted into and updated. None gets DELETE: no
	// query of the store deletes a row. (SELECT ... FOR UPDATE and FOR SHARE,
	// which the store uses on these tables, need UPDATE too.)
	brokerTables = []string{"devices", "enrollment_tokens", "users", "tokens", "grants", "access_requests", "sessions", "ssh_host_keys", "identity_claims", "brokers", "device_leases", "alert_claims"}

	// appendOnlyTables are only ever read and appended to.
	appendOnlyTables = []string{"audit_events", "audit_checkpoints", "device_events", "alert_dead_letters", "alert_replays"}

	// retainedTables are read, appended to, and deleted from only by the
	// retention pass (serve --recording-retention), which is audited.
	retainedTables = []string{"web_requests", "recordings", "recording_chunks"}

	// transientTables hold state in progress that several brokers share
	// and that is deleted once used or expired: read, inserted, updated
	// and deleted.
	transientTables = []string{"device_logins", "device_login_clients", "device_callbacks"}

	// readOnlyTables are read, never written, by the broker.
	readOnlyTables = []string{"goose_db_version"}

	// brokerSequences are drawn from directly (nextval). Identity columns
	// (audit_checkpoints.id) need no grant of their own; bigserial columns
	// (device_events.id) draw from their sequence on every insert.
	brokerSequences = []string{"device_tunnel_seq", "device_events_id_seq", "enrollment_peer_seq"}
)

// grantLockKey is the pg_advisory_xact_lock key that serialises
// GrantBrokerRole: concurrent GRANTs on one table can fail with "tuple
// concurrently updated". "fpgrant1" in ASCII as a big-endian int64.
const grantLockKey int64 = 0x6670_6772_616e_7431

var roleNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// GrantBrokerRole makes the privileges of role on the Fieldpass schema
// exactly those the broker needs: USAGE on schema public; SELECT, INSERT and
// UPDATE on the application tables; SELECT and INSERT on the audit tables;
// SELECT, INSERT, UPDATE and DELETE on the transient tables;
// USAGE and SELECT on the tunnel address sequence; SELECT on the migration
// version table. Privileges role held beyond these on the same objects are
// revoked, so running it again (every migrate does) converges on the same
// grants.
//
// Run it as the owner of the schema, after Migrate. role must exist and must
// be neither a superuser nor a member of the role running it or owning the
// tables: such a role could alter the audit tables whatever it is granted.
func (db *DB) GrantBrokerRole(ctx context.Context, role string) error {
	if !roleNameRE.MatchString(role) || strings.HasPrefix(role, "pg_") {
		return fieldpass.Errorf(fieldpass.EINVALID, "role name %q: want lowercase letters, digits and underscores (at most 63), not starting with a digit or pg_", role)
	}
	ident := pgx.Identifier{role}.Sanitize()
	all := func(names []string) string {
		q := make([]string, len(names))
		for i, n := range names {
			q[i] = pgx.Identifier{n}.Sanitize()
		}
		return strings.Join(q, ", ")
	}
	tables := all(slices.Concat(brokerTables, appendOnlyTables, retainedTables, transientTables, readOnlyTables))
	stmts := []string{
		"REVOKE ALL ON SCHEMA public FROM " + ident,
		"REVOKE ALL ON TABLE " + tables + " FROM " + ident,
		"REVOKE ALL ON SEQUENCE " + all(brokerSequences) + " FROM " + ident,
		"GRANT USAGE ON SCHEMA public TO " + ident,
		"GRANT SELECT, INSERT, UPDATE ON TABLE " + all(brokerTables) + " TO " + ident,
		"GRANT SELECT, INSERT ON TABLE " + all(appendOnlyTables) + " TO " + ident,
		"GRANT SELECT, INSERT, DELETE ON TABLE " + all(retainedTables) + " TO " + ident,
		"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE " + all(transientTables) + " TO " + ident,
		"GRANT SELECT ON TABLE " + all(readOnlyTables) + " TO " + ident,
		"GRANT USAGE, SELECT ON SEQUENCE " + all(brokerSequences) + " TO " + ident,
	}
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, grantLockKey); err != nil {
			return fmt.Errorf("grant to %s: lock: %w", role, err)
		}
		var super, owns bool
		err := tx.QueryRow(ctx, `
			SELECT r.rolsuper,
			       pg_has_role(r.rolname, current_user, 'MEMBER')
			       OR EXISTS (SELECT 1 FROM pg_class c
			                  WHERE c.oid IN ('audit_events'::regclass, 'audit_checkpoints'::regclass)
			                    AND pg_has_role(r.oid, c.relowner, 'MEMBER'))
			FROM pg_roles r WHERE r.rolname = $1`, role).Scan(&super, &owns)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fieldpass.Errorf(fieldpass.ENOTFOUND,
				"role %s does not exist: create it first: CREATE ROLE %s LOGIN PASSWORD '...'", role, role)
		case err != nil:
			return fmt.Errorf("grant to %s: %w", role, err)
		case super:
			return fieldpass.Errorf(fieldpass.EINVALID,
				"role %s is a superuser, which may alter the audit tables whatever it is granted: the broker needs a role of its own (CREATE ROLE fieldpass_broker LOGIN PASSWORD '...')", role)
		case owns:
			return fieldpass.Errorf(fieldpass.EINVALID,
				"role %s is (a member of) the role that owns the tables or runs migrate, and may alter the audit tables: the broker needs a role of its own (CREATE ROLE fieldpass_broker LOGIN PASSWORD '...')", role)
		}
		for _, q := range stmts {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("grant to %s: %w", role, err)
			}
		}
		return nil
	})
}

// CanAlterAudit reports whether the role the store connects as could undo
// the audit log's protection: a superuser, or a member of the role owning
// audit_events, audit_checkpoints, their trigger function or schema public
// (which can drop the tables, disable their triggers, or replace the
// function). The broker should run as a role for which it is false.
func (db *DB) CanAlterAudit(ctx context.Context) (bool, error) {
	var can bool
	err := db.pool.QueryRow(ctx, `
		SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
		    OR EXISTS (SELECT 1 FROM pg_tables
		               WHERE schemaname = 'public' AND tablename IN ('audit_events', 'audit_checkpoints')
		                 AND pg_has_role(tableowner, 'MEMBER'))
		    OR EXISTS (SELECT 1 FROM pg_proc
		               WHERE oid = to_regprocedure('audit_refuse_change()') AND pg_has_role(proowner, 'MEMBER'))
		    OR EXISTS (SELECT 1 FROM pg_namespace
		               WHERE nspname = 'public' AND pg_has_role(nspowner, 'MEMBER'))`).Scan(&can)
	if err != nil {
		return false, fmt.Errorf("check database role: %w", err)
	}
	return can, nil
}
