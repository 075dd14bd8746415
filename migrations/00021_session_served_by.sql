-- Several brokers, one fleet: a person's connect may reach one broker (the
-- serving broker) and be carried over brokerlink to the broker holding the
-- device, which records the session (broker_id). served_by names the
-- serving broker when it is another; '' when the holder served the person
-- itself. Written once, with the row.

-- +goose Up
ALTER TABLE sessions ADD COLUMN served_by text NOT NULL DEFAULT '' CHECK (length(served_by) <= 255);

-- +goose Down
ALTER TABLE sessions DROP COLUMN served_by;
