-- A session outlives its device's reconnects (issue 12): when the device's
-- tunnel drops (roaming, a NAT rebinding, a connector restart) the streams
-- in flight end, the session waits for the device and goes on. Its row
-- counts the drops the device came back from and the streams they cut;
-- each return is also a session.device_reconnected audit event.
--
-- The counts change while the session is open, and only upwards: the
-- guard, which lets a session change only by ending, lets them grow too.

-- +goose Up
ALTER TABLE sessions
    ADD COLUMN device_reconnects integer NOT NULL DEFAULT 0 CHECK (device_reconnects >= 0),
    ADD COLUMN streams_cut integer NOT NULL DEFAULT 0 CHECK (streams_cut >= 0);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sessions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.ended_at IS NOT NULL
       OR NEW.device_reconnects < OLD.device_reconnects
       OR NEW.streams_cut < OLD.streams_cut
       OR (to_jsonb(NEW) - 'ended_at' - 'end_reason' - 'bytes_in' - 'bytes_out' - 'device_reconnects' - 'streams_cut')
          <> (to_jsonb(OLD) - 'ended_at' - 'end_reason' - 'bytes_in' - 'bytes_out' - 'device_reconnects' - 'streams_cut') THEN
        RAISE EXCEPTION 'sessions are records: % refused', TG_OP
            USING HINT = 'a session is only ever ended, once';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION sessions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.ended_at IS NOT NULL
       OR (to_jsonb(NEW) - 'ended_at' - 'end_reason' - 'bytes_in' - 'bytes_out')
          <> (to_jsonb(OLD) - 'ended_at' - 'end_reason' - 'bytes_in' - 'bytes_out') THEN
        RAISE EXCEPTION 'sessions are records: % refused', TG_OP
            USING HINT = 'a session is only ever ended, once';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
ALTER TABLE sessions DROP COLUMN streams_cut, DROP COLUMN device_reconnects;
