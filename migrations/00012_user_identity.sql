-- People are identified by their identity provider's (issuer, subject), not
-- by email, and their roles carry the time they were last read from it.
--
-- roles_checked_at: when a login last read the user's roles from the
-- identity provider (NULL: never, a user an operator made). Tokens from
-- logins are refused once it is older than the broker's --roles-max-age, so
-- a person removed from a group at the provider loses the roles by then.
--
-- oidc_issuer, oidc_subject: the login that the user row belongs to, bound
-- at the first login (NULL until then). A login with another subject and
-- the same email (an address reassigned at the provider, say) does not
-- inherit the user and its grants: it waits in identity_claims until an
-- administrator confirms it (audited), which moves the binding.

-- +goose Up
ALTER TABLE users ADD COLUMN roles_checked_at timestamptz;
ALTER TABLE users ADD COLUMN oidc_issuer text;
ALTER TABLE users ADD COLUMN oidc_subject text;
ALTER TABLE users ADD CONSTRAINT users_identity_unique UNIQUE (oidc_issuer, oidc_subject);
ALTER TABLE users ADD CONSTRAINT users_identity_both CHECK ((oidc_issuer IS NULL) = (oidc_subject IS NULL));

CREATE TABLE identity_claims (
    oidc_issuer  text NOT NULL,
    oidc_subject text NOT NULL,
    email        text NOT NULL CHECK (email <> '' AND email = lower(btrim(email))),
    first_seen   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL,
    -- An administrator's confirmation; claims are records, never deleted.
    confirmed_at timestamptz,
    confirmed_by text,
    CHECK ((confirmed_at IS NULL) = (confirmed_by IS NULL)),
    PRIMARY KEY (oidc_issuer, oidc_subject)
);

-- +goose Down
DROP TABLE identity_claims;
ALTER TABLE users DROP CONSTRAINT users_identity_both;
ALTER TABLE users DROP CONSTRAINT users_identity_unique;
ALTER TABLE users DROP COLUMN oidc_subject;
ALTER TABLE users DROP COLUMN oidc_issuer;
ALTER TABLE users DROP COLUMN roles_checked_at;
