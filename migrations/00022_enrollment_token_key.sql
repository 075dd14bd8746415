-- Enrolment inside WireGuard: an enrolment token stands for a one-time
-- WireGuard key pair derived from its secret (tunnel.EnrollmentKey). The
-- store keeps only the public half (enroll_key, base64 as wg(8) prints it),
-- beside the token's hash, and the number of a tunnel address for the
-- token's peer (enroll_seq, from enrollment_peer_seq), which brokers map
-- from the top of the tunnel prefix down (tunnel.EnrollmentAddress) while
-- devices' addresses count up from the bottom. Brokers admit each unused, unexpired token's key as a peer that
-- reaches only the enrolment exchange, and learn of new and used tokens on
-- the channel fieldpass_enrollment_tokens. Tokens made before this
-- migration have neither and enrol over HTTPS only.

-- +goose Up
CREATE SEQUENCE enrollment_peer_seq;

ALTER TABLE enrollment_tokens
    ADD COLUMN enroll_key text CONSTRAINT enrollment_tokens_enroll_key_unique UNIQUE
        CHECK (enroll_key IS NULL OR length(enroll_key) = 44),
    ADD COLUMN enroll_seq bigint,
    ADD CHECK ((enroll_key IS NULL) = (enroll_seq IS NULL));

-- +goose StatementBegin
CREATE FUNCTION enrollment_tokens_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.enroll_key IS NOT NULL THEN
        PERFORM pg_notify('fieldpass_enrollment_tokens', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER enrollment_tokens_notify_insert
    AFTER INSERT ON enrollment_tokens
    FOR EACH ROW EXECUTE FUNCTION enrollment_tokens_notify();

CREATE TRIGGER enrollment_tokens_notify_used
    AFTER UPDATE OF used_at ON enrollment_tokens
    FOR EACH ROW EXECUTE FUNCTION enrollment_tokens_notify();

-- +goose Down
DROP TRIGGER enrollment_tokens_notify_used ON enrollment_tokens;
DROP TRIGGER enrollment_tokens_notify_insert ON enrollment_tokens;
DROP FUNCTION enrollment_tokens_notify();
ALTER TABLE enrollment_tokens DROP COLUMN enroll_seq, DROP COLUMN enroll_key;
DROP SEQUENCE enrollment_peer_seq;
