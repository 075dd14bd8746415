-- Alerts the broker gave up delivering to the webhook (alerts/): too many
-- failed attempts, too old, or still queued when the broker stopped. They
-- are kept so that an operator can see what the webhook never received.
--
-- The broker role may only read and append (postgres/role.go): a dead letter
-- is a record of a failure, not a queue to be worked off in place.

-- +goose Up
CREATE TABLE alert_dead_letters (
    id         text PRIMARY KEY, -- the delivery id (X-Fieldpass-Delivery)
    kind       text NOT NULL,
    payload    jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    attempts   integer NOT NULL CHECK (attempts >= 0),
    last_error text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    failed_at  timestamptz NOT NULL
);

CREATE INDEX alert_dead_letters_failed_at ON alert_dead_letters (failed_at);

-- +goose Down
DROP TABLE alert_dead_letters;
