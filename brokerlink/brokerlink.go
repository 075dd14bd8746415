// Package brokerlink is the authenticated link between brokers that share
// one fleet. A person's connect may reach any broker (one name in front of
// all of them), but a device's tunnel ends at exactly one: the holder of its
// lease. The broker that receives the connect (the serving broker) carries
// it to the holder over this link, and the holder decides it with the same
// rules as its own connects, records one session row (naming both brokers)
// and polices it; the serving broker only relays bytes.
//
// The link is mutual TLS (1.3) between brokers, with certificates from the
// operator's CA: a broker accepts a link only from a certificate that CA
// signed, and dials only a peer whose certificate it signed. TLS rather than
// WireGuard between brokers because the brokers already run an HTTPS edge
// with an operator's PKI (cert-manager in Kubernetes, files elsewhere),
// peer addresses change with every pod, and TLS needs no key exchange
// through the database.
//
// On the link, yamux carries one stream per request. Each stream begins
// with a frame (a uint32 big-endian length, then that many bytes of JSON,
// at most maxFrame) from the serving broker, and an answer frame from the
// holder:
//
//	{"op":"open", ...OpenRequest}  answer {"session":..., "grant_end":...}
//	    The stream then stays open as the session's control stream: the
//	    holder writes {"ended":"<reason>"} and closes it when the session
//	    ends there; the serving broker writes {"end":"<reason>"} to end it
//	    from the person's side. A link that breaks ends the sessions it
//	    opened (client_closed).
//	{"op":"stream","session":"<id>"}  answer {} — then the stream carries
//	    the person's bytes both ways; a session can be streamed only over
//	    the link that opened it.
//	{"op":"end","session":"<id>","reason":"<reason>"}  answer {"session":...}
//	    An admin's end of a session this broker holds, asked by whichever
//	    broker the admin's request reached (the session need not have been
//	    opened over this link): the holder cuts it and records the end
//	    with its own byte counts before it answers the ended row. A
//	    session not live at the holder answers not_found.
//
// A refusal answers {"error":{"code":..., "message":..., "deny":...}} and is
// rebuilt on the serving side as the same fieldpass error and refusal
// reason, so a person sees the holder's words.
package brokerlink

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fieldpass/fieldpass"
)

// maxFrame bounds one JSON frame: requests and answers are small; a peer
// that sends more is broken or hostile.
const maxFrame = 64 << 10

// OpenRequest is what the serving broker knows of the person's connect.
// The holder re-reads the user and the token from the shared database: the
// serving broker vouches only that the request came with that token.
type OpenRequest struct {
	User       string `json:"user"`
	TokenID    string `json:"token_id,omitempty"`
	MFA        bool   `json:"mfa,omitempty"`
	Device     string `json:"device"`
	Service    string `json:"service"`
	ClientAddr string `json:"client"`
	// ServedBy is the serving broker's id, recorded on the session.
	ServedBy string `json:"served_by"`
}

type request struct {
	Op string `json:"op"`
	OpenRequest
	Session string `json:"session,omitempty"`
	Reason  string `json:"reason,omitempty"` // op end
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Deny    string `json:"deny,omitempty"`
}

type answer struct {
	Error    *wireError         `json:"error,omitempty"`
	Session  *fieldpass.Session `json:"session,omitempty"`
	GrantEnd time.Time          `json:"grant_end,omitzero"`
}

// control is a frame on an open session's control stream.
type control struct {
	Ended string `json:"ended,omitempty"` // holder -> server
	End   string `json:"end,omitempty"`   // server -> holder
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("brokerlink: frame of %d bytes is over %d", len(b), maxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return fmt.Errorf("brokerlink: frame of %d bytes is over %d", size, maxFrame)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("brokerlink: bad frame: %w", err)
	}
	return nil
}

func toWire(err error) *wireError {
	code := fieldpass.ErrorCode(err)
	if code == "" {
		code = fieldpass.EINTERNAL
	}
	return &wireError{Code: code, Message: fieldpass.ErrorMessage(err), Deny: string(fieldpass.DenyReasonOf(err))}
}

func fromWire(w *wireError) error {
	err := fieldpass.Errorf(w.Code, "%s", w.Message)
	if w.Deny != "" {
		return fieldpass.Deny(fieldpass.DenyReason(w.Deny), err)
	}
	return err
}

// errClosed is returned by a remote session's Stream once the link is
// gone.
var errClosed = errors.New("brokerlink: link closed")
