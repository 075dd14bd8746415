-- Every HTTP request a person's browser made through a proxied device web
-- UI (portal/webproxy.go), for auditors: the session it belongs to, what
-- was asked, what the device answered, how much and how long. Append-only
-- for the broker, like the audit log; retention may delete old rows.

-- +goose Up
CREATE TABLE web_requests (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  uuid NOT NULL REFERENCES sessions (id),
    at          timestamptz NOT NULL,
    method      text NOT NULL CHECK (length(method) BETWEEN 1 AND 16),
    path        text NOT NULL CHECK (length(path) <= 2048),
    status      integer NOT NULL CHECK (status BETWEEN 0 AND 999),
    bytes_in    bigint NOT NULL CHECK (bytes_in >= 0),
    bytes_out   bigint NOT NULL CHECK (bytes_out >= 0),
    duration_ms bigint NOT NULL CHECK (duration_ms >= 0),
    upgrade     boolean NOT NULL DEFAULT false
);
CREATE INDEX web_requests_session ON web_requests (session_id, at);

-- +goose Down
DROP TABLE web_requests;
