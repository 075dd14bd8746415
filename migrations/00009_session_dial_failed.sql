-- The end reason of a session that never reached its service: the
-- connector could not dial it (nothing listening, unknown to it). Before
-- this such sessions were recorded as client_closed with 0/0 bytes, which
-- blamed the person for the device's service being down.

-- +goose Up
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason_check CHECK (end_reason IN (
    'client_closed', 'device_closed', 'grant_expired', 'grant_revoked',
    'device_disabled', 'user_disabled', 'ended_by_admin', 'idle_timeout',
    'audit_unavailable', 'broker_restart', 'error', 'dial_failed'));

-- +goose Down
-- Sessions are records and cannot be changed: a database holding a
-- dial_failed end cannot go back below this migration.
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason_check CHECK (end_reason IN (
    'client_closed', 'device_closed', 'grant_expired', 'grant_revoked',
    'device_disabled', 'user_disabled', 'ended_by_admin', 'idle_timeout',
    'audit_unavailable', 'broker_restart', 'error'));
