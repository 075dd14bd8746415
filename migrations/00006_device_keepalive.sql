-- Per-device WireGuard keepalive, set centrally by operators
-- (fieldpass-broker device keepalive NAME DURATION). NULL means the
-- connector's own --keepalive; a value overrides it: the broker sends it to
-- the connector at hello and over the live session when it changes.
--
-- The range is narrower than the connector's flag (1 s to 18 h). Carrier
-- NAT UDP timeouts are commonly 30 s to 5 min: below 10 s no NAT needs the
-- traffic and a fleet pays for it; an hour is already far past every such
-- timeout (the broker can reach such a device only shortly after it sent
-- something) and makes offline detection take three hours, so anything
-- longer is a mistake rather than a trade. fieldpass.MinKeepalive and
-- MaxKeepalive say the same.

-- +goose Up
ALTER TABLE devices ADD COLUMN keepalive_seconds integer
    CONSTRAINT devices_keepalive_range CHECK (keepalive_seconds BETWEEN 10 AND 3600);

-- A keepalive change is a change of the WireGuard peer: running brokers
-- must learn of it (LISTEN fieldpass_devices) to tell a connected device.
DROP TRIGGER devices_notify_update ON devices;
CREATE TRIGGER devices_notify_update
    AFTER UPDATE OF state, public_key, tunnel_addr, keepalive_seconds ON devices
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
       OR OLD.public_key IS DISTINCT FROM NEW.public_key
       OR OLD.tunnel_addr IS DISTINCT FROM NEW.tunnel_addr
       OR OLD.keepalive_seconds IS DISTINCT FROM NEW.keepalive_seconds)
    EXECUTE FUNCTION devices_notify();

-- +goose Down
DROP TRIGGER devices_notify_update ON devices;
CREATE TRIGGER devices_notify_update
    AFTER UPDATE OF state, public_key, tunnel_addr ON devices
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
       OR OLD.public_key IS DISTINCT FROM NEW.public_key
       OR OLD.tunnel_addr IS DISTINCT FROM NEW.tunnel_addr)
    EXECUTE FUNCTION devices_notify();
ALTER TABLE devices DROP COLUMN keepalive_seconds;
