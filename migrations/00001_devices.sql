-- Devices, their enrolment tokens, and the tunnel address sequence.
--
-- Changes that alter the broker's WireGuard peer set (a device appears, changes
-- state, key or tunnel address) are announced on the channel fieldpass_devices
-- with the device id as payload; running brokers LISTEN and update their peers
-- live. Presence columns are written on every handshake and must not notify.

-- +goose Up

-- Tunnel addresses are allocated as nextval(...) mapped into the broker's
-- tunnel prefix by the broker. Numbers are never reused, so an address in an
-- old audit record never points at a different device.
CREATE SEQUENCE device_tunnel_seq AS bigint START 1;

CREATE TABLE devices (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name              text NOT NULL,
    labels            jsonb NOT NULL DEFAULT '{}',
    state             text NOT NULL
                      CONSTRAINT devices_state_check
                      CHECK (state IN ('active', 'disabled', 'decommissioned')),
    -- WireGuard public key (base64). NULL once decommissioned: the key is
    -- gone for good and may be enrolled again.
    public_key        text CONSTRAINT devices_public_key_unique UNIQUE,
    tunnel_addr       inet NOT NULL CONSTRAINT devices_tunnel_addr_unique UNIQUE,
    created_at        timestamptz NOT NULL, -- when its enrolment token was made
    enrolled_at       timestamptz NOT NULL, -- when the connector used the token
    state_changed_at  timestamptz NOT NULL,

    -- Presence: what the broker holding the tunnel last saw.
    online            boolean NOT NULL DEFAULT false,
    last_seen         timestamptz,
    endpoint          text,
    connector_version text,
    broker_id         text,

    CONSTRAINT devices_decommissioned_keyless
        CHECK (state <> 'decommissioned' OR public_key IS NULL)
);

-- A name identifies one live device; decommissioned ones keep their rows
-- (sessions and audit refer to them) and free the name.
CREATE UNIQUE INDEX devices_live_name ON devices (name) WHERE state <> 'decommissioned';

-- MarkBrokerOffline touches only the devices a broker holds.
CREATE INDEX devices_online_broker ON devices (broker_id) WHERE online;

-- Enrolment tokens are stored only as the SHA-256 of the token string.
CREATE TABLE enrollment_tokens (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash  bytea NOT NULL CONSTRAINT enrollment_tokens_hash_unique UNIQUE
                CHECK (length(token_hash) = 32),
    device_name text NOT NULL,
    labels      jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    device_id   uuid REFERENCES devices (id),
    CHECK (expires_at > created_at),
    CHECK (device_id IS NULL OR used_at IS NOT NULL)
);

-- +goose StatementBegin
CREATE FUNCTION devices_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('fieldpass_devices', OLD.id::text);
    ELSE
        PERFORM pg_notify('fieldpass_devices', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER devices_notify_insert_delete
    AFTER INSERT OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION devices_notify();

-- Only the columns that make up a WireGuard peer; presence updates stay quiet.
CREATE TRIGGER devices_notify_update
    AFTER UPDATE OF state, public_key, tunnel_addr ON devices
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
       OR OLD.public_key IS DISTINCT FROM NEW.public_key
       OR OLD.tunnel_addr IS DISTINCT FROM NEW.tunnel_addr)
    EXECUTE FUNCTION devices_notify();

-- +goose Down
DROP TABLE enrollment_tokens;
DROP TABLE devices;
DROP FUNCTION devices_notify();
DROP SEQUENCE device_tunnel_seq;
