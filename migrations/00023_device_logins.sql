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

-- +goose Down
DROP TABLE device_logins;
