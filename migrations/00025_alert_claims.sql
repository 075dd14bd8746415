-- Several brokers, one fleet: alert de-duplication is shared. Each broker
-- raises the alerts of what it saw (a device offline after flapping between
-- brokers, the same offline device at every broker's start); before sending
-- one that names a subject (a device's id), a broker claims it here, and
-- only the claim that finds no send of the same kind about the same
-- subject within the kind's window wins (alerts.ClaimWindow,
-- postgres/alert_dedup.go). One row per kind and subject: the last send.

-- +goose Up
CREATE TABLE alert_claims (
    kind      text NOT NULL CHECK (length(kind) BETWEEN 1 AND 64),
    subject   text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    sent_at   timestamptz NOT NULL,
    -- The delivery id of the alert sent (its X-Fieldpass-Delivery).
    alert_id  text NOT NULL CHECK (length(alert_id) <= 64),
    PRIMARY KEY (kind, subject)
);

-- +goose Down
DROP TABLE alert_claims;
