-- Dead letters an operator re-delivered to the webhook (fieldpass-broker
-- alerts replay). A replay is recorded beside the dead letter, never by
-- changing it: a dead letter stays the record of a failure, and the broker
-- role may only read and append both tables (postgres/role.go). A letter
-- with a replay row is skipped by "alerts replay --all" and shown as
-- replayed by "alerts list". Each replay is also in the audit log
-- (alert.replay), in the same transaction.

-- +goose Up
CREATE TABLE alert_replays (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dead_letter_id text NOT NULL REFERENCES alert_dead_letters (id),
    replayed_at    timestamptz NOT NULL,
    actor          text NOT NULL,              -- operator:USER@HOST
    webhook        text NOT NULL DEFAULT ''    -- scheme and host only: a path may hold a token
);

CREATE INDEX alert_replays_dead_letter ON alert_replays (dead_letter_id);

-- +goose Down
DROP TABLE alert_replays;
