-- Several brokers, one fleet: a dead broker's devices, spread over the
-- brokers still alive (broker/fleet.go, postgres/lease.go).
--
-- When a broker stops renewing without a clean stop, the fleet's janitor
-- assigns each device the dead broker held to one live broker, balanced by
-- how many devices each already holds, and writes the assignment here; each
-- live broker calls back (nudges) only the devices assigned to it, at its
-- own pace. The table, not the notification that says it changed, is the
-- truth: a broker that missed the notification reads its share at its next
-- pass. A row goes when any broker takes the device's lease (AcquireLease),
-- or an hour after it was written (a device that never came back). A row
-- whose broker died before the device came back is assigned again when that
-- broker is swept in turn.

-- +goose Up
CREATE TABLE device_callbacks (
    device_id    uuid PRIMARY KEY REFERENCES devices (id),
    -- The broker that held the device when it died.
    dead_broker  text NOT NULL CHECK (length(dead_broker) <= 255),
    -- The live broker that calls the device back.
    broker_id    text NOT NULL CHECK (broker_id <> '' AND length(broker_id) <= 255),
    -- Where the dead broker last heard the device (host:port).
    endpoint     text NOT NULL CHECK (length(endpoint) <= 2048),
    assigned_at  timestamptz NOT NULL,
    -- When broker_id took the row to nudge the device; NULL until then.
    taken_at     timestamptz
);

CREATE INDEX device_callbacks_broker ON device_callbacks (broker_id);

-- +goose Down
DROP TABLE device_callbacks;
