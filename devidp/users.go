package devidp

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/fieldpass/fieldpass"
)

// User is a person who can log in at the provider. The users file is a JSON
// array of these (see README.md).
type User struct {
	// Email is the login name and the email claim (always asserted as
	// verified: the broker refuses unverified addresses). Required.
	Email string `json:"email"`
	// Name is the name claim (default: the email).
	Name string `json:"name,omitempty"`
	// Subject is the sub claim (default: derived from the email, so it is
	// stable across restarts).
	Subject string `json:"sub,omitempty"`
	// Password is compared as it is: the file is for development only.
	// PasswordBcrypt is a bcrypt hash instead. Exactly one is required.
	Password       string `json:"password,omitempty"`
	PasswordBcrypt string `json:"password_bcrypt,omitempty"`
	// Groups is the groups claim, which the broker maps to roles.
	Groups []string `json:"groups,omitempty"`
	// AMR is the amr claim (RFC 8176) of this person's logins (default
	// ["pwd"]); ["pwd","otp"] makes the broker's MFA policy see a second
	// factor without one being asked for.
	AMR []string `json:"amr,omitempty"`
}

// ReadUsersFile reads a users file (see ParseUsers).
func ReadUsersFile(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read users file: %w", err)
	}
	users, err := ParseUsers(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, nil
}

// ParseUsers reads a JSON array of users, refusing unknown fields (a typo
// such as "passwd" would otherwise make a user who cannot log in), missing
// or duplicate emails, and users with no password or two.
func ParseUsers(r io.Reader) ([]User, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var users []User
	if err := dec.Decode(&users); err != nil {
		return nil, fmt.Errorf("want a JSON array of users: %w", err)
	}
	if len(users) == 0 {
		return nil, fieldpass.Errorf(fieldpass.EINVALID, "no users")
	}
	seen := map[string]bool{}
	subs := map[string]bool{}
	for i := range users {
		u := &users[i]
		if err := u.normalize(); err != nil {
			return nil, fmt.Errorf("user %d: %w", i+1, err)
		}
		if seen[u.Email] {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "user %d: email %s appears twice", i+1, u.Email)
		}
		if subs[u.Subject] {
			return nil, fieldpass.Errorf(fieldpass.EINVALID, "user %d: sub %s appears twice", i+1, u.Subject)
		}
		seen[u.Email], subs[u.Subject] = true, true
	}
	return users, nil
}

// normalize checks u and fills in its defaults.
func (u *User) normalize() error {
	email, err := fieldpass.NormalizeEmail(u.Email)
	if err != nil {
		return err
	}
	u.Email = email
	if (u.Password == "") == (u.PasswordBcrypt == "") {
		return fieldpass.Errorf(fieldpass.EINVALID, "%s: want exactly one of password and password_bcrypt", email)
	}
	if u.PasswordBcrypt != "" {
		if _, err := bcrypt.Cost([]byte(u.PasswordBcrypt)); err != nil {
			return fieldpass.Errorf(fieldpass.EINVALID, "%s: password_bcrypt is not a bcrypt hash", email)
		}
	}
	if u.Name == "" {
		u.Name = email
	}
	if u.Subject == "" {
		sum := sha256.Sum256([]byte(email))
		u.Subject = "devidp-" + hex.EncodeToString(sum[:10])
	}
	if len(u.AMR) == 0 {
		u.AMR = []string{"pwd"}
	}
	for _, g := range u.Groups {
		if strings.TrimSpace(g) == "" {
			return fieldpass.Errorf(fieldpass.EINVALID, "%s: an empty group", email)
		}
	}
	return nil
}

// checkPassword reports whether password is u's.
func (u *User) checkPassword(password string) bool {
	if u.PasswordBcrypt != "" {
		return bcrypt.CompareHashAndPassword([]byte(u.PasswordBcrypt), []byte(password)) == nil
	}
	return subtle.ConstantTimeCompare([]byte(u.Password), []byte(password)) == 1
}
