-- What a device's connector said about itself, and a decommissioned
-- device's key.
--
-- services: the names (never the targets) of the services the connector
-- exposes, from its last hello; NULL while no connector has said (one
-- before announcements, or never connected). Grants naming a service a
-- device is known not to expose are refused unless asked for
-- (--allow-unknown). Written at hello; it changes no WireGuard peer, so it
-- does not notify.
--
-- retired_key: the key a device had when it was decommissioned. The key
-- itself is freed (public_key NULL); the broker keeps the retired key as a
-- barred peer for a while so that the connector, still calling, is told it
-- was decommissioned instead of timing out in silence.

-- +goose Up
ALTER TABLE devices ADD COLUMN services text[]
    CONSTRAINT devices_services_bounded CHECK (cardinality(services) <= 64);
ALTER TABLE devices ADD COLUMN retired_key text;

-- +goose Down
ALTER TABLE devices DROP COLUMN retired_key;
ALTER TABLE devices DROP COLUMN services;
