package tunnel

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/netip"
)

// Enrolment inside WireGuard (see PROTOCOL.md, "Enrolment inside
// WireGuard"): the token's secret stands for a WireGuard key pair that both
// ends derive from it (fieldpass.EnrollmentKey); the broker stores only the public half and admits it
// as a peer that reaches nothing but the enrolment exchange. The connector
// sends an EnrollAsk with its own fresh public key and reads an
// EnrollAnswer. No TLS is needed: WireGuard's handshake with the token's
// static key is what proves the token.

var (
	enrollAskMagic    = [2]byte{'F', 'E'}
	enrollAnswerMagic = [2]byte{'F', 'N'}
)

// MaxEnrollAnswer bounds the JSON body of an EnrollAnswer.
const MaxEnrollAnswer = 8 << 10

// EnrollAsk is what the connector sends through the token's tunnel: the
// device's own public key (its private half never leaves the device) and
// its release.
type EnrollAsk struct {
	PublicKey        [32]byte
	ConnectorVersion string
}

// EnrollAnswer is the broker's answer: OK with what the connector needs to
// bring its tunnel up, or a refusal with the error's code and message, as
// the HTTPS enrolment gives them.
type EnrollAnswer struct {
	OK    *EnrollResponse
	Error *ErrorResponse
}

// WriteEnrollAsk encodes a to w in one write:
// "FE" ver(1) public_key(32) len(1) connector_version(len).
func WriteEnrollAsk(w io.Writer, a EnrollAsk) error {
	if len(a.ConnectorVersion) > MaxVersion || !printable(a.ConnectorVersion) {
		return protoErr("connector version %q: at most %d printable ASCII characters", a.ConnectorVersion, MaxVersion)
	}
	b := make([]byte, 0, 36+len(a.ConnectorVersion))
	b = append(b, enrollAskMagic[:]...)
	b = append(b, Version)
	b = append(b, a.PublicKey[:]...)
	b = append(b, byte(len(a.ConnectorVersion)))
	b = append(b, a.ConnectorVersion...)
	_, err := w.Write(b)
	return err
}

// ReadEnrollAsk decodes an EnrollAsk, reading exactly its bytes.
func ReadEnrollAsk(r io.Reader) (EnrollAsk, error) {
	var a EnrollAsk
	var fixed [36]byte
	if err := readFull(r, fixed[:]); err != nil {
		return a, err
	}
	if err := checkPrefix(fixed[:3], enrollAskMagic); err != nil {
		return a, err
	}
	copy(a.PublicKey[:], fixed[3:35])
	n := int(fixed[35])
	if n > MaxVersion {
		return a, protoErr("connector version length %d exceeds %d", n, MaxVersion)
	}
	v := make([]byte, n)
	if err := readFull(r, v); err != nil {
		return a, err
	}
	if !printable(string(v)) {
		return a, protoErr("connector version is not printable ASCII")
	}
	a.ConnectorVersion = string(v)
	return a, nil
}

// Enrolment answer codes.
const (
	enrollOK      = 0
	enrollRefused = 1
)

// WriteEnrollAnswer encodes a to w in one write:
// "FN" ver(1) code(1) len(2) json(len <= MaxEnrollAnswer), the JSON being
// an EnrollResponse (code 0) or an ErrorResponse (code 1).
func WriteEnrollAnswer(w io.Writer, a EnrollAnswer) error {
	var code byte
	var v any
	switch {
	case a.OK != nil && a.Error == nil:
		code, v = enrollOK, a.OK
	case a.Error != nil && a.OK == nil:
		code, v = enrollRefused, a.Error
	default:
		return protoErr("an enrolment answer is either ok or a refusal")
	}
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > MaxEnrollAnswer {
		return protoErr("enrolment answer of %d bytes exceeds %d", len(body), MaxEnrollAnswer)
	}
	b := make([]byte, 0, 6+len(body))
	b = append(b, enrollAnswerMagic[:]...)
	b = append(b, Version, code)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	b = append(b, body...)
	_, err = w.Write(b)
	return err
}

// ReadEnrollAnswer decodes an EnrollAnswer, reading exactly its bytes.
// Unknown JSON fields are ignored, so that a newer broker can add some.
func ReadEnrollAnswer(r io.Reader) (EnrollAnswer, error) {
	var fixed [6]byte
	if err := readFull(r, fixed[:]); err != nil {
		return EnrollAnswer{}, err
	}
	if err := checkPrefix(fixed[:3], enrollAnswerMagic); err != nil {
		return EnrollAnswer{}, err
	}
	n := int(binary.BigEndian.Uint16(fixed[4:6]))
	if n > MaxEnrollAnswer {
		return EnrollAnswer{}, protoErr("enrolment answer of %d bytes exceeds %d", n, MaxEnrollAnswer)
	}
	body := make([]byte, n)
	if err := readFull(r, body); err != nil {
		return EnrollAnswer{}, err
	}
	dec := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(body))
		if err := d.Decode(v); err != nil {
			return protoErr("enrolment answer: %v", err)
		}
		if d.More() {
			return protoErr("enrolment answer: data after the JSON value")
		}
		return nil
	}
	switch fixed[3] {
	case enrollOK:
		var ok EnrollResponse
		if err := dec(&ok); err != nil {
			return EnrollAnswer{}, err
		}
		return EnrollAnswer{OK: &ok}, nil
	case enrollRefused:
		var e ErrorResponse
		if err := dec(&e); err != nil {
			return EnrollAnswer{}, err
		}
		return EnrollAnswer{Error: &e}, nil
	default:
		return EnrollAnswer{}, protoErr("enrolment answer code %d", fixed[3])
	}
}

// EnrollmentAddress maps an enrolment token's number (enroll_seq, counted
// from 1) to the tunnel address of its peer: from the top of prefix down,
// below the broadcast address, over the top quarter of the prefix (at
// least one address) and round again. Devices' addresses count up from
// the bottom, so the two meet only in a prefix three quarters full; and
// two outstanding tokens share an address only when a quarter of the
// prefix's worth of tokens was made within one token's life. The broker
// admits the newer of two such tokens and no token over a device.
func EnrollmentAddress(prefix netip.Prefix, seq int64) (netip.Addr, error) {
	if seq < 1 {
		return netip.Addr{}, fmt.Errorf("enrolment address: number %d, want 1 or more", seq)
	}
	host := prefix.Addr().BitLen() - prefix.Bits()
	if host < 3 {
		return netip.Addr{}, fmt.Errorf("enrolment address: prefix %s has no room for enrolment peers", prefix)
	}
	slots := int64(1) << min(host-2, 62)
	// The top address is broadcast in IPv4 and left alone in both.
	back := 1 + (seq-1)%slots + 1
	b := prefix.Masked().Addr().AsSlice()
	top := new(big.Int).SetBytes(b)
	top.Add(top, new(big.Int).Lsh(big.NewInt(1), uint(host)))
	top.Sub(top, big.NewInt(back))
	out := top.FillBytes(make([]byte, len(b)))
	a, _ := netip.AddrFromSlice(out)
	return a, nil
}
