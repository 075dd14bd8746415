-- Connectivity history per device: what brokers saw of each device's tunnel
-- over time (online, offline, roaming, connector upgrades, suspected clones).
--
-- Rows are written asynchronously by the broker, off the tunnel's hot path:
-- when Postgres is down they are dropped (and logged), never queued without
-- bound. History is an operator aid, not the audit record; the broker role
-- may only read and append (postgres/role.go).

-- +goose Up
CREATE TABLE device_events (
    id                bigserial PRIMARY KEY,
    device_id         uuid NOT NULL REFERENCES devices (id),
    at                timestamptz NOT NULL,
    kind              text NOT NULL CONSTRAINT device_events_kind_check CHECK (kind IN (
                          'online', 'offline', 'endpoint_changed', 'version_changed', 'clone_suspected')),
    broker_id         text NOT NULL DEFAULT '',
    endpoint          text NOT NULL DEFAULT '',
    previous_endpoint text NOT NULL DEFAULT '',
    connector_version text NOT NULL DEFAULT '',
    details           jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);

CREATE INDEX device_events_device_at ON device_events (device_id, at);

-- +goose Down
DROP TABLE device_events;
