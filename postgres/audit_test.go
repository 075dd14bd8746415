package postgres_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func (s *store) mustAppend(tb testing.TB, actor, action, target string, details map[string]any) fieldpass.AuditEvent {
	tb.Helper()
	e, err := s.AppendAudit(context.Background(), fieldpass.AuditEvent{Actor: actor, Action: action, Target: target, Details: details})
	if err != nil {
		tb.Fatalf("AppendAudit(%s %s): %v", actor, action, err)
	}
	return e
}

// mustAppendN appends n events from a few actors and targets.
func (s *store) mustAppendN(tb testing.TB, n int) []fieldpass.AuditEvent {
	tb.Helper()
	evs := make([]fieldpass.AuditEvent, n)
	for i := range evs {
		evs[i] = s.mustAppend(tb, fmt.Sprintf("operator:op%d", i%2), fieldpass.AuditDeviceDisable,
			fmt.Sprintf("device:gw-%d", i%3), map[string]any{"i": i})
	}
	return evs
}

// wantBroken checks that err is an *AuditChainError at seq whose problem
// mentions problem.
func wantBroken(tb testing.TB, err error, seq int64, problem string) {
	tb.Helper()
	var ce *fieldpass.AuditChainError
	if !errors.As(err, &ce) {
		tb.Fatalf("error: got %v, want an *AuditChainError at seq %d", err, seq)
	}
	if ce.Seq != seq || !strings.Contains(ce.Problem, problem) {
		tb.Errorf("error: got %q, want seq %d and %q", err, seq, problem)
	}
}

// tamper runs statements as the cluster's superuser with the audit triggers
// disabled, as an attacker with full control of the database would.
func (s *store) tamper(tb testing.TB, stmts ...string) {
	tb.Helper()
	ctx := context.Background()
	var dbName string
	if err := s.sql.QueryRow(ctx, "SELECT current_database()").Scan(&dbName); err != nil {
		tb.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(pgtest.ClusterURL(tb))
	if err != nil {
		tb.Fatal(err)
	}
	cfg.Database = dbName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	all := append([]string{
		"ALTER TABLE audit_events DISABLE TRIGGER USER",
		"ALTER TABLE audit_checkpoints DISABLE TRIGGER USER",
	}, stmts...)
	all = append(all,
		"ALTER TABLE audit_events ENABLE TRIGGER USER",
		"ALTER TABLE audit_checkpoints ENABLE TRIGGER USER")
	for _, q := range all {
		if _, err := conn.Exec(ctx, q); err != nil {
			tb.Fatalf("%s: %v", q, err)
		}
	}
}

func TestAppendAudit(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()

	details := map[string]any{
		"labels": map[string]any{"site": "north", "a<b": "x&y"},
		"n":      42.5, "big": 1e21, "small": 1e-7, "list": []any{true, nil, "é"},
	}
	first := s.mustAppend(t, "operator:root@host", fieldpass.AuditTokenCreate, "device:pump-7", details)
	s.clock.Add(time.Second)
	second := s.mustAppend(t, "device:pump-7", fieldpass.AuditDeviceEnroll, "device:pump-7", nil)
	s.clock.Add(time.Second)
	third := s.mustAppend(t, "operator:root@host", fieldpass.AuditDeviceDisable, "device:pump-7", map[string]any{"from": "active"})

	if first.Seq != 1 || second.Seq != 2 || third.Seq != 3 {
		t.Errorf("seq: got %d, %d, %d, want 1, 2, 3", first.Seq, second.Seq, third.Seq)
	}
	if !bytes.Equal(first.PrevHash, make([]byte, 32)) {
		t.Errorf("first prev_hash: got %x, want 32 zero bytes", first.PrevHash)
	}
	if !bytes.Equal(second.PrevHash, first.Hash) || !bytes.Equal(third.PrevHash, second.Hash) {
		t.Errorf("prev_hash does not chain to the previous hash")
	}
	if want := time.Date(2030, 1, 2, 3, 4, 6, 0, time.UTC); !second.At.Equal(want) {
		t.Errorf("at: got %v, want %v", second.At, want)
	}
	for _, e := range []fieldpass.AuditEvent{first, second, third} {
		h, err := fieldpass.AuditHash(e)
		if err != nil || !bytes.Equal(h, e.Hash) {
			t.Errorf("seq %d: hash %x, recomputed %x (%v)", e.Seq, e.Hash, h, err)
		}
	}

	// What is read back is what was returned, and hashes the same.
	got, err := s.AuditEvents(ctx, fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []fieldpass.AuditEvent{first, second, third}; !reflect.DeepEqual(got, want) {
		t.Errorf("AuditEvents:\n got %+v\nwant %+v", got, want)
	}

	n, err := s.VerifyAudit(ctx)
	if err != nil || n != 3 {
		t.Errorf("VerifyAudit: got %d, %v, want 3, nil", n, err)
	}

	t.Run("filters", func(t *testing.T) {
		tests := []struct {
			name string
			f    fieldpass.AuditFilter
			want []int64
		}{
			{"actor", fieldpass.AuditFilter{Actor: "operator:root@host"}, []int64{1, 3}},
			{"action", fieldpass.AuditFilter{Action: fieldpass.AuditDeviceEnroll}, []int64{2}},
			{"target", fieldpass.AuditFilter{Target: "device:pump-7"}, []int64{1, 2, 3}},
			{"since", fieldpass.AuditFilter{Since: second.At}, []int64{2, 3}},
			{"until", fieldpass.AuditFilter{Until: second.At}, []int64{1}},
			{"limit", fieldpass.AuditFilter{Limit: 2}, []int64{1, 2}},
			{"after seq", fieldpass.AuditFilter{AfterSeq: 2}, []int64{3}},
			{"none", fieldpass.AuditFilter{Actor: "nobody"}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				evs, err := s.AuditEvents(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				var seqs []int64
				for _, e := range evs {
					seqs = append(seqs, e.Seq)
				}
				if !reflect.DeepEqual(seqs, tt.want) {
					t.Errorf("got %v, want %v", seqs, tt.want)
				}
			})
		}
	})

	t.Run("invalid", func(t *testing.T) {
		tests := []struct {
			name string
			e    fieldpass.AuditEvent
			msg  string
		}{
			{"no actor", fieldpass.AuditEvent{Action: "x"}, "empty actor"},
			{"no action", fieldpass.AuditEvent{Actor: "x"}, "empty action"},
			{"control character", fieldpass.AuditEvent{Actor: "x\n", Action: "x"}, "control character"},
			{"not JSON", fieldpass.AuditEvent{Actor: "x", Action: "x", Details: map[string]any{"f": func() {}}}, "not JSON"},
			{"NUL", fieldpass.AuditEvent{Actor: "x", Action: "x", Details: map[string]any{"s": "a\x00b"}}, "NUL"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, err := s.AppendAudit(ctx, tt.e)
				wantError(t, err, fieldpass.EINVALID, tt.msg)
			})
		}
		if n := s.count(t, "SELECT count(*) FROM audit_events"); n != 3 {
			t.Errorf("events after refused appends: got %d, want 3", n)
		}
	})
}

// TestAppendAuditTx checks that an event appended in a transaction that rolls
// back leaves no trace, and the next one takes its seq.
func TestAppendAuditTx(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustAppend(t, "a", "x", "", nil)
	errRollback := errors.New("roll back")
	err := pgx.BeginFunc(ctx, s.sql, func(tx pgx.Tx) error {
		if _, err := s.AppendAuditTx(ctx, tx, fieldpass.AuditEvent{Actor: "b", Action: "x"}); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatalf("BeginFunc: %v", err)
	}
	if e := s.mustAppend(t, "c", "x", "", nil); e.Seq != 2 {
		t.Errorf("seq after a rolled back append: got %d, want 2", e.Seq)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 2 {
		t.Errorf("VerifyAudit: got %d, %v, want 2, nil", n, err)
	}
}

func TestAppendAuditConcurrent(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	const workers, each = 20, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, err := s.AppendAudit(context.Background(), fieldpass.AuditEvent{
					Actor: fmt.Sprintf("broker:%d", w), Action: "test.append", Details: map[string]any{"i": i},
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n, lo, hi int64
	if err := s.sql.QueryRow(t.Context(), "SELECT count(*), min(seq), max(seq) FROM audit_events").Scan(&n, &lo, &hi); err != nil {
		t.Fatal(err)
	}
	if n != workers*each || lo != 1 || hi != workers*each {
		t.Errorf("seq: %d events from %d to %d, want %d from 1 without gaps", n, lo, hi, workers*each)
	}
	if got, err := s.VerifyAudit(t.Context()); err != nil || got != workers*each {
		t.Errorf("VerifyAudit: got %d, %v, want %d, nil", got, err, workers*each)
	}
}

// TestAuditAppendOnly checks that the database itself refuses to change or
// remove audit rows, even for the tables' owner (here the superuser that ran
// the migrations).
func TestAuditAppendOnly(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	s.mustAppendN(t, 2)
	if _, err := s.CheckpointAudit(ctx, testKey()); err != nil {
		t.Fatal(err)
	}
	var owner string
	if err := s.sql.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'audit_events'").Scan(&owner); err != nil {
		t.Fatal(err)
	}
	var user string
	if err := s.sql.QueryRow(ctx, "SELECT current_user").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if owner != user {
		t.Fatalf("test connects as %s, but the table owner is %s", user, owner)
	}
	for _, table := range []string{"audit_events", "audit_checkpoints"} {
		for _, q := range []string{
			"UPDATE " + table + " SET at = now()",
			"DELETE FROM " + table + " WHERE seq = 2",
			"TRUNCATE " + table,
		} {
			t.Run(q, func(t *testing.T) {
				_, err := s.sql.Exec(ctx, q)
				if err == nil || !strings.Contains(err.Error(), table+" is append-only") {
					t.Errorf("got %v, want the append-only refusal", err)
				}
			})
		}
	}
	if n := s.count(t, "SELECT count(*) FROM audit_events"); n != 2 {
		t.Errorf("events: got %d, want 2", n)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 2 {
		t.Errorf("VerifyAudit: got %d, %v, want 2, nil", n, err)
	}
}

// TestVerifyAuditTampering plays an attacker with superuser rights who
// disables the triggers and changes the log.
func TestVerifyAuditTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tamper  func(t *testing.T, s *store, evs []fieldpass.AuditEvent)
		seq     int64
		problem string
	}{
		{"edit one row", func(t *testing.T, s *store, _ []fieldpass.AuditEvent) {
			s.tamper(t, "UPDATE audit_events SET actor = 'operator:someone-else' WHERE seq = 3")
		}, 3, "hash does not match"},
		{"edit details", func(t *testing.T, s *store, _ []fieldpass.AuditEvent) {
			s.tamper(t, `UPDATE audit_events SET details = '{"i": 99}' WHERE seq = 4`)
		}, 4, "hash does not match"},
		{"edit one row and fix its hash", func(t *testing.T, s *store, evs []fieldpass.AuditEvent) {
			e := evs[2]
			e.Actor = "operator:someone-else"
			h, err := fieldpass.AuditHash(e)
			if err != nil {
				t.Fatal(err)
			}
			s.tamper(t, fmt.Sprintf(`UPDATE audit_events SET actor = '%s', hash = '\x%x' WHERE seq = 3`, e.Actor, h))
		}, 4, "prev_hash does not match the hash of seq 3"},
		{"delete a row", func(t *testing.T, s *store, _ []fieldpass.AuditEvent) {
			s.tamper(t, "DELETE FROM audit_events WHERE seq = 2")
		}, 2, "missing"},
		{"delete the first row", func(t *testing.T, s *store, _ []fieldpass.AuditEvent) {
			s.tamper(t, "DELETE FROM audit_events WHERE seq = 1")
		}, 2, "does not start at seq 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := mustOpen(t)
			evs := s.mustAppendN(t, 6)
			tt.tamper(t, s, evs)
			_, err := s.VerifyAudit(t.Context())
			wantBroken(t, err, tt.seq, tt.problem)
		})
	}

	t.Run("rewrite the chain whole", func(t *testing.T) {
		t.Parallel()
		s := mustOpen(t)
		evs := s.mustAppendN(t, 6)
		if _, err := s.CheckpointAudit(t.Context(), testKey()); err != nil {
			t.Fatal(err)
		}
		// Change seq 3 and recompute every hash from there: the chain
		// itself checks out again; the stored checkpoint does not.
		var stmts []string
		prev := evs[1].Hash
		for _, e := range evs[2:] {
			if e.Seq == 3 {
				e.Actor = "operator:someone-else"
			}
			e.PrevHash = prev
			h, err := fieldpass.AuditHash(e)
			if err != nil {
				t.Fatal(err)
			}
			stmts = append(stmts, fmt.Sprintf(`UPDATE audit_events SET actor = '%s', prev_hash = '\x%x', hash = '\x%x' WHERE seq = %d`,
				e.Actor, e.PrevHash, h, e.Seq))
			prev = h
		}
		s.tamper(t, stmts...)
		_, err := s.VerifyAudit(t.Context())
		wantBroken(t, err, 6, "hash differs from the checkpoint")
	})

	t.Run("cut the end under a stored checkpoint", func(t *testing.T) {
		t.Parallel()
		s := mustOpen(t)
		s.mustAppendN(t, 6)
		if _, err := s.CheckpointAudit(t.Context(), testKey()); err != nil {
			t.Fatal(err)
		}
		s.tamper(t, "DELETE FROM audit_events WHERE seq > 4")
		_, err := s.VerifyAudit(t.Context())
		wantBroken(t, err, 5, "removed from the end")
	})
}

// TestVerifyAuditBatches checks a log longer than one read batch, with a
// broken link deep inside it.
func TestVerifyAuditBatches(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	const n = 12345
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	prev := fieldpass.AuditGenesisHash
	rows := make([][]any, n)
	for i := range rows {
		e := fieldpass.AuditEvent{Seq: int64(i + 1), At: at, Actor: "broker:b1", Action: "test.bulk", Target: "device:x",
			Details: map[string]any{"i": float64(i)}, PrevHash: prev}
		h, err := fieldpass.AuditHash(e)
		if err != nil {
			t.Fatal(err)
		}
		rows[i] = []any{e.Seq, e.At, e.Actor, e.Action, e.Target, e.Details, e.PrevHash, h}
		prev = h
	}
	_, err := s.sql.CopyFrom(ctx, pgx.Identifier{"audit_events"},
		[]string{"seq", "at", "actor", "action", "target", "details", "prev_hash", "hash"}, pgx.CopyFromRows(rows))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := s.VerifyAudit(ctx)
	if err != nil || got != n {
		t.Fatalf("VerifyAudit: got %d, %v, want %d, nil", got, err, n)
	}
	t.Logf("verified %d events in %v", n, time.Since(start))
	// The next append continues the bulk-loaded chain.
	if e := s.mustAppend(t, "broker:b1", "test.after", "", nil); e.Seq != n+1 {
		t.Errorf("seq after bulk load: got %d, want %d", e.Seq, n+1)
	}

	s.tamper(t, `UPDATE audit_events SET target = 'device:y' WHERE seq = 7777`)
	got, err = s.VerifyAudit(ctx)
	wantBroken(t, err, 7777, "hash does not match")
	if got != 7776 {
		t.Errorf("checked before the break: got %d, want 7776", got)
	}
}

func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func TestCheckpointAudit(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	key := testKey()

	_, err := s.CheckpointAudit(ctx, key)
	wantError(t, err, fieldpass.ECONFLICT, "empty")

	evs := s.mustAppendN(t, 3)
	cp, err := s.CheckpointAudit(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Seq != 3 || !bytes.Equal(cp.Hash, evs[2].Hash) {
		t.Errorf("checkpoint: got seq %d hash %x, want seq 3 hash %x", cp.Seq, cp.Hash, evs[2].Hash)
	}
	if err := cp.Verify(key.Public().(ed25519.PublicKey)); err != nil {
		t.Errorf("Verify: %v", err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, ed25519.SeedSize))
	if err := cp.Verify(other.Public().(ed25519.PublicKey)); err == nil {
		t.Errorf("Verify with another key: got nil, want an error")
	}
	stored, err := s.AuditCheckpoints(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 1 || !reflect.DeepEqual(stored[0], cp) {
		t.Errorf("AuditCheckpoints:\n got %+v\nwant [%+v]", stored, cp)
	}

	// A broken log is not signed.
	s.tamper(t, "UPDATE audit_events SET action = 'x' WHERE seq = 2")
	_, err = s.CheckpointAudit(ctx, key)
	wantBroken(t, err, 2, "hash does not match")
	if n := s.count(t, "SELECT count(*) FROM audit_checkpoints"); n != 1 {
		t.Errorf("checkpoints: got %d, want 1", n)
	}
}

// TestAuditedActions checks the events the operator and enrolment actions
// record, and that an action fails, changing nothing, when its event cannot
// be written.
func TestAuditedActions(t *testing.T) {
	t.Parallel()
	s := mustOpen(t)
	ctx := t.Context()
	const op = "operator:alice@broker-1"

	token, expires, err := s.CreateEnrollmentTokenAudited(ctx, op, "pump-7", map[string]string{"site": "north"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := s.EnrollAudited(ctx, "198.51.100.7", token, key(1), "v1.2.3", addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []fieldpass.DeviceState{fieldpass.DeviceDisabled, fieldpass.DeviceDisabled, fieldpass.DeviceActive, fieldpass.DeviceDecommissioned} {
		if _, err := s.SetDeviceStateAudited(ctx, op, "pump-7", st); err != nil {
			t.Fatal(err)
		}
	}

	evs, err := s.AuditEvents(ctx, fieldpass.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ actor, action, target string }
	var got []row
	for _, e := range evs {
		got = append(got, row{e.Actor, e.Action, e.Target})
		for k, v := range e.Details {
			if s, ok := v.(string); ok && strings.Contains(s, token[4:]) {
				t.Errorf("seq %d: details[%s] holds the token", e.Seq, k)
			}
		}
	}
	want := []row{
		{op, fieldpass.AuditTokenCreate, "device:pump-7"},
		{"device:pump-7", fieldpass.AuditDeviceEnroll, "device:pump-7"},
		{op, fieldpass.AuditDeviceDisable, "device:pump-7"},
		// disabling a disabled device changes nothing and records nothing
		{op, fieldpass.AuditDeviceEnable, "device:pump-7"},
		{op, fieldpass.AuditDeviceDecommission, "device:pump-7"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("events:\n got %v\nwant %v", got, want)
	}
	if d := evs[0].Details; d["device"] != "pump-7" || !reflect.DeepEqual(d["labels"], map[string]any{"site": "north"}) ||
		d["expires_at"] != expires.Format(time.RFC3339Nano) {
		t.Errorf("token details: got %v", d)
	}
	if d := evs[1].Details; d["client"] != "198.51.100.7" || d["device_id"] != dev.ID || d["tunnel_address"] != dev.TunnelAddr.String() {
		t.Errorf("enrol details: got %v", d)
	}
	if d := evs[4].Details; d["from"] != "active" || d["to"] != "decommissioned" {
		t.Errorf("decommission details: got %v", d)
	}
	if n, err := s.VerifyAudit(ctx); err != nil || n != 5 {
		t.Errorf("VerifyAudit: got %d, %v, want 5, nil", n, err)
	}

	_, _, err = s.CreateEnrollmentTokenAudited(ctx, "", "pump-8", nil, time.Hour)
	wantError(t, err, fieldpass.EINVALID, "no actor")

	t.Run("audit failure fails the action", func(t *testing.T) {
		token, _, err := s.CreateEnrollmentTokenAudited(ctx, op, "pump-9", nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		s.mustEnroll(t, "pump-10", 10)
		// From here on, every append fails.
		if _, err := s.sql.Exec(ctx, `ALTER TABLE audit_events ADD CONSTRAINT test_refuse CHECK (seq < 0) NOT VALID`); err != nil {
			t.Fatal(err)
		}
		if _, err := s.EnrollAudited(ctx, "198.51.100.9", token, key(9), "v1", addr); err == nil {
			t.Error("EnrollAudited: got nil, want an error")
		}
		if n := s.count(t, "SELECT count(*) FROM devices WHERE name = 'pump-9'"); n != 0 {
			t.Errorf("pump-9 enrolled without its audit event")
		}
		if n := s.count(t, "SELECT count(*) FROM enrollment_tokens WHERE device_name = 'pump-9' AND used_at IS NULL"); n != 1 {
			t.Errorf("token of pump-9 used up without an audit event")
		}
		if _, err := s.SetDeviceStateAudited(ctx, op, "pump-10", fieldpass.DeviceDisabled); err == nil {
			t.Error("SetDeviceStateAudited: got nil, want an error")
		}
		if d, err := s.Device(ctx, "pump-10"); err != nil || d.State != fieldpass.DeviceActive {
			t.Errorf("pump-10: got %v, %v, want it still active", d, err)
		}
		if _, _, err := s.CreateEnrollmentTokenAudited(ctx, op, "pump-11", nil, time.Hour); err == nil {
			t.Error("CreateEnrollmentTokenAudited: got nil, want an error")
		}
		if n := s.count(t, "SELECT count(*) FROM enrollment_tokens WHERE device_name = 'pump-11'"); n != 0 {
			t.Errorf("token for pump-11 created without an audit event")
		}
	})
}
