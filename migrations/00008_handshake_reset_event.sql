-- A device history event for the broker resetting a peer's WireGuard
-- handshake state after a long silence (broker ResetAfter, fieldpass-broker
-- serve --handshake-reset-after). WireGuard refuses a handshake whose
-- timestamp is not newer than the last one it accepted from that key, so a
-- device that rebooted with its clock behind is locked out until then: the
-- event, between its offline and its next online, says why it got back in.

-- +goose Up
ALTER TABLE device_events DROP CONSTRAINT device_events_kind_check;
ALTER TABLE device_events ADD CONSTRAINT device_events_kind_check CHECK (kind IN (
    'online', 'offline', 'endpoint_changed', 'version_changed', 'clone_suspected', 'handshake_reset'));

-- +goose Down
DELETE FROM device_events WHERE kind = 'handshake_reset';
ALTER TABLE device_events DROP CONSTRAINT device_events_kind_check;
ALTER TABLE device_events ADD CONSTRAINT device_events_kind_check CHECK (kind IN (
    'online', 'offline', 'endpoint_changed', 'version_changed', 'clone_suspected'));
