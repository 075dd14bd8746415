-- The audit log: append-only and hash-chained (DESIGN.md, "Audit is
-- append-only and tamper-evident").
--
-- audit_events holds one row per event, numbered 1, 2, 3, ... without gaps.
-- Appends take pg_advisory_xact_lock(7381506946083943473) (the ASCII of
-- "fpaudit1" as a bigint) for the rest of their transaction, read the newest
-- row, and insert seq+1 chained to its hash; so appends take turns and each
-- commits after the one it chains to. The first event's prev_hash is 32 zero
-- bytes.
--
-- hash = SHA-256 of this byte string (integers big-endian, no separators):
--
--   'fieldpass-audit-event-v1' || E'\n'      25 bytes, domain separation
--   seq                                      int64
--   at                                       int64, Unix time in microseconds (UTC)
--   length(actor)   actor                    uint32 byte length, then UTF-8
--   length(action)  action                   uint32 byte length, then UTF-8
--   length(target)  target                   uint32 byte length, then UTF-8
--   length(details) details                  uint32 byte length, then the canonical
--                                            JSON: keys sorted bytewise, no spaces,
--                                            numbers as float64 in their shortest
--                                            round-trip form, no HTML escaping;
--                                            an empty object is {}
--   prev_hash                                32 bytes
--
-- (fieldpass.AuditHash and postgres/audit.go implement and document the same.)
-- details is stored as jsonb; the canonical text is recomputed from it.
--
-- The database refuses UPDATE, DELETE and TRUNCATE on both tables, whoever
-- asks. A superuser or the table owner can still disable the triggers or
-- drop the table: the hash chain and the signed checkpoints, exported and
-- kept elsewhere, are what catch that.

-- +goose Up
CREATE TABLE audit_events (
    seq        bigint PRIMARY KEY CHECK (seq > 0),
    at         timestamptz NOT NULL,
    actor      text NOT NULL CHECK (actor <> ''),
    action     text NOT NULL CHECK (action <> ''),
    target     text NOT NULL,
    details    jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    prev_hash  bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash       bytea NOT NULL CHECK (length(hash) = 32)
);

CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_target ON audit_events (target, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, seq);

-- A checkpoint is the broker's ed25519 signature over
--   'fieldpass-audit-checkpoint-v1' || E'\n' || seq (int64) || hash || at (int64 Unix microseconds)
-- of the newest event when it was made (fieldpass.AuditCheckpointMessage).
CREATE TABLE audit_checkpoints (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq         bigint NOT NULL CHECK (seq > 0),
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    at          timestamptz NOT NULL,
    public_key  bytea NOT NULL CHECK (length(public_key) = 32),
    signature   bytea NOT NULL CHECK (length(signature) = 64)
);

CREATE INDEX audit_checkpoints_seq ON audit_checkpoints (seq);

-- +goose StatementBegin
CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING HINT = 'audit records are never changed or removed';
END
$$;
-- +goose StatementEnd

CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

CREATE TRIGGER audit_checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- +goose Down
-- Rolling back drops the log: only for a database that was never used.
DROP TABLE audit_checkpoints;
DROP TABLE audit_events;
DROP FUNCTION audit_refuse_change();
