-- Several brokers, one fleet: the CLI's device logins in progress (RFC 8628
-- in shape; portal/login_device.go, postgres/login.go). The CLI starts a
-- login on one broker, the person approves it on the page of whichever
-- broker the shared name sends them to, and the CLI's polls may land on a
-- third: all of them read and write this row.
--
-- The device code is a bearer secret: only its SHA-256 is stored. A row
-- lives ten minutes at most (expires_at, by the portal's clock) and goes
-- when its token is issued, when it is denied and polled, or when a start
-- sweeps the expired ones. The token is issued once: a poll claims an
-- approved row by moving it to 'issuing' under its row lock.
--
-- device_login_clients counts each client's logins (kept by a trigger), so
-- that a start past the cap on logins in progress finds the client holding
-- the most without counting every row (a flood starts thousands).

-- +goose Up
CREATE TABLE device_logins (
    code_hash    bytea PRIMARY KEY CHECK (length(code_hash) = 32),
    user_code    text NOT NULL UNIQUE CHECK (user_code ~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$'),
    started_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    interval_ms  bigint NOT NULL CHECK (interval_ms > 0),
    last_poll    timestamptz,
    client       text NOT NULL CHECK (length(client) <= 255),
    client_key   text NOT NULL CHECK (length(client_key) <= 255),
    agent        text NOT NULL CHECK (length(agent) <= 255),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'issuing')),
    -- Set at approval: who approved, with which portal session (token id),
    -- and what that session's login asserted.
    email        text NOT NULL DEFAULT '',
    session_id   text NOT NULL DEFAULT '',
    mfa          boolean NOT NULL DEFAULT false,
    amr          text[] NOT NULL DEFAULT '{}',
    acr          text NOT NULL DEFAULT ''
);

CREATE INDEX device_logins_client ON device_logins (client_key, started_at);
CREATE INDEX device_logins_expires ON device_logins (expires_at);
CREATE INDEX device_logins_pending ON device_logins (started_at) WHERE status = 'pending';

CREATE TABLE device_login_clients (
    client_key      text PRIMARY KEY,
    logins          integer NOT NULL CHECK (logins > 0),
    pending         integer NOT NULL CHECK (pending >= 0 AND pending <= logins),
    oldest_pending  timestamptz CHECK ((pending = 0) = (oldest_pending IS NULL))
);

CREATE INDEX device_login_clients_most ON device_login_clients (logins DESC, oldest_pending) WHERE pending > 0;

-- +goose StatementBegin
CREATE FUNCTION device_logins_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO device_login_clients AS c (client_key, logins, pending, oldest_pending)
        VALUES (NEW.client_key, 1, (NEW.status = 'pending')::int, CASE WHEN NEW.status = 'pending' THEN NEW.started_at END)
        ON CONFLICT (client_key) DO UPDATE SET logins = c.logins + 1, pending = c.pending + excluded.pending,
            oldest_pending = least(c.oldest_pending, excluded.oldest_pending);
        RETURN NULL;
    END IF;
    -- A login deleted or changing status: count the client's again (a few
    -- rows, by index).
    IF TG_OP = 'DELETE' THEN
        DELETE FROM device_login_clients WHERE client_key = OLD.client_key AND logins = 1;
    END IF;
    UPDATE device_login_clients c
    SET logins = c.logins - (TG_OP = 'DELETE')::int,
        (pending, oldest_pending) = (
            SELECT count(*), min(started_at) FROM device_logins d
            WHERE d.client_key = OLD.client_key AND d.status = 'pending')
    WHERE c.client_key = OLD.client_key;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER device_logins_count_insert_delete
    AFTER INSERT OR DELETE ON device_logins
    FOR EACH ROW EXECUTE FUNCTION device_logins_count();

-- client_key is never updated.
CREATE TRIGGER device_logins_count_status
    AFTER UPDATE OF status ON device_logins
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION device_logins_count();

-- +goose Down
DROP TABLE device_logins;
DROP TABLE device_login_clients;
DROP FUNCTION device_logins_count();
