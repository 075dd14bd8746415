-- Why a grant was revoked, in the admin's words (optional): kept on the
-- grant beside who revoked it and when, and in the grant.revoke audit event.
-- A grant still changes only once, by being revoked; the reason is written
-- in that one update, never later.

-- +goose Up
ALTER TABLE grants ADD COLUMN revoke_reason text NOT NULL DEFAULT ''
    CHECK (length(revoke_reason) <= 1000);

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION grants_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.revoked_at IS NOT NULL
       OR (NEW.revoked_at IS NULL AND NEW.revoke_reason <> OLD.revoke_reason)
       OR (to_jsonb(NEW) - 'revoked_at' - 'revoked_by' - 'revoke_reason')
          <> (to_jsonb(OLD) - 'revoked_at' - 'revoked_by' - 'revoke_reason') THEN
        RAISE EXCEPTION 'grants are records: % refused', TG_OP
            USING HINT = 'a grant is only ever revoked, once';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION grants_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'UPDATE'
       OR OLD.revoked_at IS NOT NULL
       OR (to_jsonb(NEW) - 'revoked_at' - 'revoked_by') <> (to_jsonb(OLD) - 'revoked_at' - 'revoked_by') THEN
        RAISE EXCEPTION 'grants are records: % refused', TG_OP
            USING HINT = 'a grant is only ever revoked, once';
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
ALTER TABLE grants DROP COLUMN revoke_reason;
