-- An approver's comment on a decision (why approved, why denied), shown to
-- the requester and kept in the audit record.

-- +goose Up
ALTER TABLE access_requests ADD COLUMN decision_comment text NOT NULL DEFAULT ''
    CHECK (length(decision_comment) <= 1000);

-- +goose Down
ALTER TABLE access_requests DROP COLUMN decision_comment;
