package fieldpass

import (
	"encoding/base64"
	"strings"
)

// EnrollmentTokenPrefix starts every enrolment token, so a token pasted in
// the wrong place (or found in a log) is recognisable at a glance.
const EnrollmentTokenPrefix = "fpe_"

// enrollmentTokenBytes is the entropy of a token: 256 bits.
const enrollmentTokenBytes = 32

// FormatEnrollmentToken renders raw random bytes as a token.
func FormatEnrollmentToken(raw [enrollmentTokenBytes]byte) string {
	return EnrollmentTokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
}

// CheckEnrollmentToken reports whether s has the shape of an enrolment token,
// so malformed input is refused before any network or database round trip.
func CheckEnrollmentToken(s string) error {
	rest, ok := strings.CutPrefix(s, EnrollmentTokenPrefix)
	if !ok || base64.RawURLEncoding.DecodedLen(len(rest)) != enrollmentTokenBytes {
		return Errorf(EINVALID, "malformed enrolment token: want %s followed by 43 characters", EnrollmentTokenPrefix)
	}
	if _, err := base64.RawURLEncoding.DecodeString(rest); err != nil {
		return Errorf(EINVALID, "malformed enrolment token: want %s followed by 43 characters", EnrollmentTokenPrefix)
	}
	return nil
}
