-- audit_append: the whole append of one audit event (00002_audit.sql) as one
-- statement, so that an append costs one round trip and the chain's lock is
-- held only while the server runs it and the commit that follows, never
-- across a network round trip to the broker. The hash is the one
-- 00002_audit.sql defines; the broker recomputes it from what this returns
-- (fieldpass.AuditHash) and rolls back on any difference, so the two
-- implementations cannot drift apart unnoticed.
--
-- p_details is the canonical JSON text of the details (the broker makes it);
-- p_at is the broker's clock, raised to the newest event's time if it is
-- behind, so that at never goes backwards along the chain.
--
-- SECURITY INVOKER (the default): it does nothing the caller could not do
-- with INSERT on audit_events, and takes the same advisory lock.

-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION audit_append(p_actor text, p_action text, p_target text, p_details text, p_at timestamptz)
RETURNS TABLE (seq bigint, at timestamptz, prev_hash bytea, hash bytea)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_seq  bigint := 1;
    v_prev bytea := '\x0000000000000000000000000000000000000000000000000000000000000000';
    v_at   timestamptz := date_trunc('microseconds', p_at);
    v_last timestamptz;
    v_hash bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(7381506946083943473);
    -- A statement after the lock: in READ COMMITTED it sees every append
    -- committed before the lock was granted.
    SELECT e.seq + 1, e.hash, e.at INTO v_seq, v_prev, v_last
        FROM audit_events e ORDER BY e.seq DESC LIMIT 1;
    IF NOT FOUND THEN
        v_seq := 1;
        v_prev := '\x0000000000000000000000000000000000000000000000000000000000000000';
    ELSIF v_last > v_at THEN
        v_at := v_last;
    END IF;
    v_hash := sha256(
        convert_to('fieldpass-audit-event-v1' || E'\n', 'UTF8')
        || int8send(v_seq)
        || int8send((extract(epoch FROM v_at) * 1000000)::bigint)
        || int4send(octet_length(convert_to(p_actor, 'UTF8'))) || convert_to(p_actor, 'UTF8')
        || int4send(octet_length(convert_to(p_action, 'UTF8'))) || convert_to(p_action, 'UTF8')
        || int4send(octet_length(convert_to(p_target, 'UTF8'))) || convert_to(p_target, 'UTF8')
        || int4send(octet_length(convert_to(p_details, 'UTF8'))) || convert_to(p_details, 'UTF8')
        || v_prev);
    INSERT INTO audit_events (seq, at, actor, action, target, details, prev_hash, hash)
        VALUES (v_seq, v_at, p_actor, p_action, p_target, p_details::jsonb, v_prev, v_hash);
    RETURN QUERY SELECT v_seq, v_at, v_prev, v_hash;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION audit_append(text, text, text, text, timestamptz);
