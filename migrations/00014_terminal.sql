-- The browser terminal (portal/terminal.go): SSH host keys pinned on first
-- use per device and service, and terminal recordings in asciicast v2,
-- written in chunks as the session runs so a crash loses at most a second.
-- Recordings and web request logs are deleted past their retention
-- (serve --recording-retention); session rows and audit events are kept.

-- +goose Up
CREATE TABLE ssh_host_keys (
    device_id   uuid NOT NULL REFERENCES devices (id),
    service     text NOT NULL,
    key_type    text NOT NULL,
    key         bytea NOT NULL,          -- the SSH wire form
    fingerprint text NOT NULL,           -- SHA256:..., as ssh-keygen -l shows it
    pinned_at   timestamptz NOT NULL,
    pinned_by   text NOT NULL,           -- an audit actor
    PRIMARY KEY (device_id, service)
);

CREATE TABLE recordings (
    session_id  uuid PRIMARY KEY REFERENCES sessions (id),
    header      text NOT NULL,           -- the asciicast v2 header line
    started_at  timestamptz NOT NULL,
    input       boolean NOT NULL         -- keystrokes recorded too
);

CREATE TABLE recording_chunks (
    session_id  uuid NOT NULL REFERENCES recordings (session_id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    at          timestamptz NOT NULL,
    events      text NOT NULL,           -- asciicast v2 event lines
    PRIMARY KEY (session_id, seq)
);

-- +goose Down
DROP TABLE recording_chunks;
DROP TABLE recordings;
DROP TABLE ssh_host_keys;
