-- Who may reach what, and the record of what they did: users and their
-- broker-issued tokens, grants, access requests, sessions.
--
-- Emails are stored normalised (trimmed, lowercase; fieldpass.NormalizeEmail)
-- and identify people everywhere: a grant names an email, which may belong to
-- no user yet (a vendor who has not logged in).
--
-- Notifications, so that running brokers cut live sessions within a second:
--   fieldpass_grants  payload: grant id; on insert and on revocation
--   fieldpass_users   payload: email;    when a user is disabled or enabled
--
-- Grants and ended sessions are records: the database refuses to delete
-- them or change them beyond revoking a grant once and ending a session once.

-- +goose Up
CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text NOT NULL CONSTRAINT users_email_unique UNIQUE
                CHECK (email <> '' AND email = lower(btrim(email))),
    -- Roles from the identity provider's groups claim, refreshed at each
    -- login; none means vendor.
    roles       text[] NOT NULL DEFAULT '{}'
                CHECK (roles <@ ARRAY['admin', 'approver', 'engineer', 'auditor']::text[]),
    disabled    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- Broker-issued tokens (portal sessions, CLI logins, automation), stored
-- only as the SHA-256 of the token string.
CREATE TABLE tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash   bytea NOT NULL CONSTRAINT tokens_hash_unique UNIQUE
                 CHECK (length(token_hash) = 32),
    user_id      uuid NOT NULL REFERENCES users (id),
    kind         text NOT NULL CHECK (kind IN ('session', 'cli', 'automation')),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    revoked_by   text,
    last_used_at timestamptz,
    CHECK (expires_at > created_at),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE INDEX tokens_user ON tokens (user_id, created_at);

-- A grant names its devices by name (devices) or by label selector
-- (selector, matched with devices.labels @> selector), exactly one of them.
CREATE TABLE grants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject     text NOT NULL CHECK (subject <> '' AND subject = lower(btrim(subject))),
    devices     text[],
    selector    jsonb,
    services    text[] NOT NULL CHECK (cardinality(services) > 0),
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL, -- every grant ends
    reason      text NOT NULL CHECK (reason <> ''),
    ticket      text NOT NULL DEFAULT '',
    created_by  text NOT NULL CHECK (created_by <> ''),
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    revoked_by  text,
    CONSTRAINT grants_window_check CHECK (ends_at > starts_at),
    CONSTRAINT grants_target_check CHECK ((devices IS NULL) <> (selector IS NULL)),
    CHECK (devices IS NULL OR cardinality(devices) > 0),
    -- An empty selector would match every device.
    CHECK (selector IS NULL OR (jsonb_typeof(selector) = 'object' AND selector <> '{}'::jsonb)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);

CREATE INDEX grants_subject ON grants (subject, ends_at);
CREATE INDEX grants_ends_at ON grants (ends_at);

CREATE TABLE access_requests (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    requester        text NOT NULL CHECK (requester <> ''),
    device           text NOT NULL,
    service          text NOT NULL,
    duration_seconds bigint NOT NULL CHECK (duration_seconds >= 60),
    reason           text NOT NULL CHECK (reason <> ''),
    ticket           text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approved', 'denied')),
    decided_by       text,
    decided_at       timestamptz,
    grant_id         uuid REFERENCES grants (id),
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    CHECK ((status = 'pending') = (decided_by IS NULL)),
    CHECK ((status = 'approved') = (grant_id IS NOT NULL)),
    -- Nobody approves their own request.
    CONSTRAINT access_requests_not_self CHECK (decided_by <> requester)
);

-- One pending request per person, device and service.
CREATE UNIQUE INDEX access_requests_one_pending
    ON access_requests (requester, device, service) WHERE status = 'pending';
CREATE INDEX access_requests_status ON access_requests (status, created_at);

-- A session row is committed before any byte flows, and ended once.
CREATE TABLE sessions (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id),
    user_email   text NOT NULL,
    device_id    uuid NOT NULL REFERENCES devices (id),
    device_name  text NOT NULL,
    service      text NOT NULL,
    grant_id     uuid NOT NULL REFERENCES grants (id),
    client_addr  text NOT NULL DEFAULT '',
    broker_id    text NOT NULL DEFAULT '',
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    bytes_in     bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out    bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    end_reason   text CONSTRAINT sessions_end_reason_check CHECK (end_reason IN (
                     'client_closed', 'device_closed', 'grant_expired', 'grant_revoked',
                     'device_disabled', 'user_disabled', 'ended_by_admin', 'idle_timeout',
                     'audit_unavailable', 'broker_restart', 'error')),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);

-- Open sessions, by the broker carrying them: closed at that broker's start.
CREATE INDEX sessions_open ON sessions (broker_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_device ON sessions (device_name, started_at);
CREATE INDEX sessions_user ON sessions (user_email, started_at);
CREATE INDEX sessions_started ON sessions (started_at);

-- +goose StatementBegin
CREATE FUNCTION grants_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fieldpass_grants', NEW.id::text);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER grants_notify_insert
    AFTER INSERT ON grants
    FOR EACH ROW EXECUTE FUNCTION grants_notify();
CREATE TRIGGER grants_notify_revoke
    AFTER UPDATE OF revoked_at ON grants
    FOR EACH ROW
    WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION grants_notify();

-- A grant changes once, by being revoked; nothing else about it ever does.
-- +goose StatementBegin
CREATE FUNCTION grants_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.revoked_at IS NOT NULL
       OR (to_jsonb(NEW) - 'revoked_at' - 'revoked_by') <> (to_jsonb(OLD) - 'revoked_at' - 'revoked_by') THEN
        RAISE EXCEPTION 'grants are records: % refused', TG_OP
            USING HINT = 'a grant is only ever revoked, once';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER grants_guard_update_delete
    BEFORE UPDATE OR DELETE ON grants
    FOR EACH ROW EXECUTE FUNCTION grants_guard();
CREATE TRIGGER grants_guard_truncate
    BEFORE TRUNCATE ON grants
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- A session changes once, by ending (ended_at, end_reason, bytes).
-- +goose StatementBegin
CREATE FUNCTION sessions_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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

CREATE TRIGGER sessions_guard_update_delete
    BEFORE UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION sessions_guard();
CREATE TRIGGER sessions_guard_truncate
    BEFORE TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- +goose StatementBegin
CREATE FUNCTION users_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('fieldpass_users', NEW.email);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER users_notify_disabled
    AFTER UPDATE OF disabled ON users
    FOR EACH ROW
    WHEN (OLD.disabled IS DISTINCT FROM NEW.disabled)
    EXECUTE FUNCTION users_notify();

-- +goose Down
-- Rolling back drops the records: only for a database that was never used.
DROP TABLE sessions;
DROP TABLE access_requests;
DROP TABLE grants;
DROP TABLE tokens;
DROP TABLE users;
DROP FUNCTION sessions_guard();
DROP FUNCTION grants_guard();
DROP FUNCTION grants_notify();
DROP FUNCTION users_notify();
