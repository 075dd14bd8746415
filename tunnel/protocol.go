package tunnel

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Magic values open each message so that a peer speaking something else is
// rejected at the first bytes rather than misparsed.
var (
	helloMagic      = [2]byte{'F', 'H'}
	helloReplyMagic = [2]byte{'F', 'R'}
	headerMagic     = [2]byte{'F', 'S'}
	statusMagic     = [2]byte{'F', 'A'}
	controlMagic    = [2]byte{'F', 'C'}
	resetMagic      = [2]byte{'F', 'X'}
)

// Limits on variable-length fields. They are part of the protocol.
const (
	MaxServiceName = 63
	MaxReason      = 255
	MaxVersion     = 64
	// MaxServices bounds the service names a Hello announces, so that a
	// hello stays under 4.2 KiB.
	MaxServices = 64
)

// helloServicesVersion is the version byte of a Hello that announces the
// connector's service names. Only the Hello has it: every other message,
// the broker's reply included, stays at Version. A connector that sends it
// also honours Reset streams.
const helloServicesVersion = 2

// ErrProtocol is wrapped by every decoding error.
var ErrProtocol = errors.New("tunnel protocol error")

func protoErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrProtocol, fmt.Sprintf(format, args...))
}

// ID is a 16-byte identifier (a UUID) of a device or a session.
type ID [16]byte

// ParseID parses the canonical 36-character UUID form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return id, protoErr("invalid id %q", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:]
	if _, err := hex.Decode(id[:], []byte(h)); err != nil {
		return id, protoErr("invalid id %q", s)
	}
	return id, nil
}

func (id ID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// Hello is the connector's first message on its tunnel TCP connection.
type Hello struct {
	DeviceID ID
	// ConnectorVersion is the connector's release, for presence.
	ConnectorVersion string
	// KeepaliveSeconds is the connector's own WireGuard persistent
	// keepalive (its flag), so the broker knows how long silence may last
	// before the device is offline. A setting in the HelloReply overrides
	// it.
	KeepaliveSeconds uint16
	// Services are the names of the services the connector exposes (never
	// their targets), so the broker can refuse a grant to a service the
	// device does not have. nil: the hello did not say (a connector before
	// announcements, or one talking to a broker before them); empty but not
	// nil: it exposes none. A Hello with Services is sent as version 2.
	Services []string
}

// HelloCode is the broker's answer to a Hello.
type HelloCode byte

const (
	HelloOK       HelloCode = 0
	HelloRejected HelloCode = 1 // identity does not match the tunnel address
	HelloDisabled HelloCode = 2 // device is disabled or decommissioned
	HelloVersion  HelloCode = 3 // unsupported protocol version
	// HelloUnavailable: this broker cannot serve the device now (one of
	// several brokers, cut off from the database): try another endpoint.
	// Connectors that predate it treat it as any refusal, and move on
	// to their next endpoint after the second.
	HelloUnavailable HelloCode = 4
)

func (c HelloCode) String() string {
	switch c {
	case HelloOK:
		return "ok"
	case HelloRejected:
		return "rejected"
	case HelloDisabled:
		return "disabled"
	case HelloVersion:
		return "unsupported version"
	case HelloUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("code %d", byte(c))
}

// HelloReply is the broker's answer; yamux starts after an OK.
type HelloReply struct {
	Code HelloCode
	// Reason says why a hello was refused; an OK has none.
	Reason string
	// KeepaliveSeconds, in an OK only, is the WireGuard persistent
	// keepalive operators set for this device; it overrides the
	// connector's own. 0: none set, the connector's own applies.
	KeepaliveSeconds uint16
}

// Control is a setting the broker sends on a stream of its own while the
// session is up (a StreamOpen with Control set), so that a change reaches a
// connected device without ending its session. The connector answers with
// a Control holding what it now uses.
type Control struct {
	// KeepaliveSeconds is the WireGuard persistent keepalive to use; 0
	// means the connector's own setting.
	KeepaliveSeconds uint16
}

// StreamHeader opens every session stream the broker opens.
type StreamHeader struct {
	SessionID ID
	Service   string
}

// Reset asks the connector to drop the stream it names at once, both ways,
// closing its connection to the device's service: the broker sends it on a
// stream of its own when it cuts a stream the connector has not finished
// with (a session ended, the person's side failed). yamux v0.1.2 has no
// reset of its own, and its Close is a half-close, so without this the
// device side of a cut stream lingered until the service closed or the
// stream close timeout (5 min) passed.
type Reset struct {
	// StreamID is the yamux id of the stream to drop (the same at both
	// ends of a yamux session).
	StreamID uint32
}

// StatusCode is the connector's answer to a StreamHeader.
type StatusCode byte

const (
	StatusOK             StatusCode = 0
	StatusUnknownService StatusCode = 1
	StatusDialFailed     StatusCode = 2
	StatusBadHeader      StatusCode = 3
)

func (c StatusCode) String() string {
	switch c {
	case StatusOK:
		return "ok"
	case StatusUnknownService:
		return "unknown service"
	case StatusDialFailed:
		return "dial failed"
	case StatusBadHeader:
		return "bad header"
	}
	return fmt.Sprintf("code %d", byte(c))
}

// StreamStatus is the connector's answer; bytes flow only after StatusOK.
type StreamStatus struct {
	Code StatusCode
	// Reason says why a stream was refused; an OK has none.
	Reason string
	// Resets, in an OK only, says the connector honours a Reset naming
	// this stream. Older connectors do not; the broker sends them none.
	Resets bool
}

// Wire layouts (all integers big endian):
//
//	Hello:        "FH" ver(1) device_id(16) keepalive_s(2) vlen(1) version(vlen)
//	              ver 2 adds: count(1) count*(slen(1) service(slen))
//	HelloReply:   "FR" ver(1) code(1) rlen(1) reason(rlen)
//	StreamHeader: "FS" ver(1) session_id(16) slen(1) service(slen)
//	StreamStatus: "FA" ver(1) code(1) rlen(1) reason(rlen)
//	Control:      "FC" ver(1) keepalive_s(2)
//	Reset:        "FX" ver(1) stream_id(4)
//
// The body of an OK StreamStatus (its "reason") holds the connector's
// capabilities for the stream instead: space-separated words, today only
// "reset". Brokers before them ignore the body of an OK.
//
// The body of an OK HelloReply (its "reason") holds settings instead:
// space-separated name=value items, today only keepalive=SECONDS. Connectors
// before the settings ignored the body of an OK, so they still parse it.

// WriteHello encodes h to w in one write: version 1 when h.Services is nil,
// else version 2 with the service names.
func WriteHello(w io.Writer, h Hello) error {
	if len(h.ConnectorVersion) > MaxVersion || !printable(h.ConnectorVersion) {
		return protoErr("connector version %q: at most %d printable ASCII characters", h.ConnectorVersion, MaxVersion)
	}
	if err := checkServices(h.Services); err != nil {
		return err
	}
	ver := byte(Version)
	if h.Services != nil {
		ver = helloServicesVersion
	}
	b := make([]byte, 0, 23+len(h.ConnectorVersion)+len(h.Services)*16)
	b = append(b, helloMagic[:]...)
	b = append(b, ver)
	b = append(b, h.DeviceID[:]...)
	b = binary.BigEndian.AppendUint16(b, h.KeepaliveSeconds)
	b = append(b, byte(len(h.ConnectorVersion)))
	b = append(b, h.ConnectorVersion...)
	if h.Services != nil {
		b = append(b, byte(len(h.Services)))
		for _, s := range h.Services {
			b = append(b, byte(len(s)))
			b = append(b, s...)
		}
	}
	_, err := w.Write(b)
	return err
}

// ReadHello decodes a Hello of version 1 or 2, reading exactly its bytes.
// Another version returns an error wrapping ErrVersion so the broker can
// answer HelloVersion.
func ReadHello(r io.Reader) (Hello, error) {
	var h Hello
	var fixed [22]byte
	if err := readFull(r, fixed[:]); err != nil {
		return h, err
	}
	withServices := fixed[2] == helloServicesVersion
	if withServices {
		fixed[2] = Version // the rest of the prefix is checked as for v1
	}
	if err := checkPrefix(fixed[:3], helloMagic); err != nil {
		return h, err
	}
	copy(h.DeviceID[:], fixed[3:19])
	h.KeepaliveSeconds = binary.BigEndian.Uint16(fixed[19:21])
	n := int(fixed[21])
	if n > MaxVersion {
		return h, protoErr("connector version length %d exceeds %d", n, MaxVersion)
	}
	v := make([]byte, n)
	if err := readFull(r, v); err != nil {
		return h, err
	}
	if !printable(string(v)) {
		return h, protoErr("connector version is not printable ASCII")
	}
	h.ConnectorVersion = string(v)
	if !withServices {
		return h, nil
	}
	var count [1]byte
	if err := readFull(r, count[:]); err != nil {
		return h, err
	}
	if int(count[0]) > MaxServices {
		return h, protoErr("hello announces %d services, more than %d", count[0], MaxServices)
	}
	h.Services = make([]string, 0, count[0])
	for range int(count[0]) {
		var l [1]byte
		if err := readFull(r, l[:]); err != nil {
			return h, err
		}
		if l[0] == 0 || int(l[0]) > MaxServiceName {
			return h, protoErr("service name length %d: want 1-%d", l[0], MaxServiceName)
		}
		s := make([]byte, l[0])
		if err := readFull(r, s); err != nil {
			return h, err
		}
		h.Services = append(h.Services, string(s))
	}
	if err := checkServices(h.Services); err != nil {
		return h, err
	}
	return h, nil
}

// checkServices checks the service names of a Hello: valid, at most
// MaxServices, no name twice.
func checkServices(names []string) error {
	if len(names) > MaxServices {
		return protoErr("%d services: at most %d", len(names), MaxServices)
	}
	for i, s := range names {
		if err := checkService(s); err != nil {
			return err
		}
		if slices.Contains(names[:i], s) {
			return protoErr("service %q named twice", s)
		}
	}
	return nil
}

// keepaliveSetting names the keepalive in an OK HelloReply's settings.
const keepaliveSetting = "keepalive"

// WriteHelloReply encodes r to w in one write. An OK carries the settings
// and no reason; a refusal carries the reason and no settings.
func WriteHelloReply(w io.Writer, r HelloReply) error {
	if r.Code != HelloOK {
		return writeCoded(w, helloReplyMagic, byte(r.Code), r.Reason)
	}
	if r.Reason != "" {
		return protoErr("an ok hello reply has no reason")
	}
	var body string
	if r.KeepaliveSeconds != 0 {
		body = keepaliveSetting + "=" + strconv.Itoa(int(r.KeepaliveSeconds))
	}
	return writeCoded(w, helloReplyMagic, byte(r.Code), body)
}

// ReadHelloReply decodes a HelloReply. Settings it does not know in an OK
// are skipped, so that a newer broker can add some.
func ReadHelloReply(r io.Reader) (HelloReply, error) {
	code, body, err := readCoded(r, helloReplyMagic)
	if err != nil {
		return HelloReply{}, err
	}
	reply := HelloReply{Code: HelloCode(code)}
	if reply.Code != HelloOK {
		reply.Reason = body
		return reply, nil
	}
	seen := false
	for _, item := range strings.Fields(body) {
		name, value, ok := strings.Cut(item, "=")
		if !ok || name == "" {
			return HelloReply{}, protoErr("hello reply setting %q: want name=value", item)
		}
		if name != keepaliveSetting {
			continue
		}
		if seen {
			return HelloReply{}, protoErr("hello reply sets keepalive twice")
		}
		seen = true
		n, err := strconv.ParseUint(value, 10, 16)
		if err != nil || n == 0 || value[0] == '0' {
			return HelloReply{}, protoErr("hello reply keepalive %q: want 1-65535 seconds", value)
		}
		reply.KeepaliveSeconds = uint16(n)
	}
	return reply, nil
}

// WriteControl encodes c to w in one write.
func WriteControl(w io.Writer, c Control) error {
	b := make([]byte, 0, 5)
	b = append(b, controlMagic[:]...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint16(b, c.KeepaliveSeconds)
	_, err := w.Write(b)
	return err
}

// ReadControl decodes a Control, reading exactly its bytes.
func ReadControl(r io.Reader) (Control, error) {
	var b [5]byte
	if err := readFull(r, b[:]); err != nil {
		return Control{}, err
	}
	if err := checkPrefix(b[:3], controlMagic); err != nil {
		return Control{}, err
	}
	return Control{KeepaliveSeconds: binary.BigEndian.Uint16(b[3:5])}, nil
}

// WriteReset encodes r to w in one write.
func WriteReset(w io.Writer, r Reset) error {
	b := make([]byte, 0, 7)
	b = append(b, resetMagic[:]...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint32(b, r.StreamID)
	_, err := w.Write(b)
	return err
}

// ReadReset decodes a Reset, reading exactly its bytes.
func ReadReset(r io.Reader) (Reset, error) {
	var b [7]byte
	if err := readFull(r, b[:]); err != nil {
		return Reset{}, err
	}
	if err := checkPrefix(b[:3], resetMagic); err != nil {
		return Reset{}, err
	}
	return Reset{StreamID: binary.BigEndian.Uint32(b[3:7])}, nil
}

// StreamOpen is the first message of a stream the broker opened: a
// session's StreamHeader, a Control when Control is not nil, or a Reset
// when Reset is not nil.
type StreamOpen struct {
	Header  StreamHeader
	Control *Control
	Reset   *Reset
}

// ReadStreamOpen decodes the first message of a stream the broker opened,
// telling a Control from a StreamHeader by its magic. It reads exactly the
// message's bytes.
func ReadStreamOpen(r io.Reader) (StreamOpen, error) {
	var magic [2]byte
	if err := readFull(r, magic[:]); err != nil {
		return StreamOpen{}, err
	}
	mr := io.MultiReader(bytes.NewReader(magic[:]), r)
	if magic == controlMagic {
		c, err := ReadControl(mr)
		if err != nil {
			return StreamOpen{}, err
		}
		return StreamOpen{Control: &c}, nil
	}
	if magic == resetMagic {
		rs, err := ReadReset(mr)
		if err != nil {
			return StreamOpen{}, err
		}
		return StreamOpen{Reset: &rs}, nil
	}
	h, err := ReadStreamHeader(mr)
	return StreamOpen{Header: h}, err
}

// WriteStreamHeader encodes h to w in one write.
func WriteStreamHeader(w io.Writer, h StreamHeader) error {
	b, err := AppendStreamHeader(make([]byte, 0, 20+len(h.Service)), h)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// AppendStreamHeader appends the encoding of h to b, so that bytes to
// follow it can go in the same write.
func AppendStreamHeader(b []byte, h StreamHeader) ([]byte, error) {
	if err := checkService(h.Service); err != nil {
		return b, err
	}
	b = append(b, headerMagic[:]...)
	b = append(b, Version)
	b = append(b, h.SessionID[:]...)
	b = append(b, byte(len(h.Service)))
	b = append(b, h.Service...)
	return b, nil
}

// ReadStreamHeader decodes a StreamHeader, reading exactly its bytes so that
// what follows on the stream is left for the service.
func ReadStreamHeader(r io.Reader) (StreamHeader, error) {
	var h StreamHeader
	var fixed [20]byte
	if err := readFull(r, fixed[:]); err != nil {
		return h, err
	}
	if err := checkPrefix(fixed[:3], headerMagic); err != nil {
		return h, err
	}
	copy(h.SessionID[:], fixed[3:19])
	n := int(fixed[19])
	if n == 0 || n > MaxServiceName {
		return h, protoErr("service name length %d: want 1-%d", n, MaxServiceName)
	}
	s := make([]byte, n)
	if err := readFull(r, s); err != nil {
		return h, err
	}
	h.Service = string(s)
	if err := checkService(h.Service); err != nil {
		return h, err
	}
	return h, nil
}

// resetCapability names, in an OK StreamStatus's body, a connector's
// promise to honour a Reset naming the stream.
const resetCapability = "reset"

// WriteStreamStatus encodes s to w in one write. An OK carries the
// capabilities and no reason; a refusal the reason and no capabilities.
func WriteStreamStatus(w io.Writer, s StreamStatus) error {
	if s.Code != StatusOK {
		return writeCoded(w, statusMagic, byte(s.Code), s.Reason)
	}
	if s.Reason != "" {
		return protoErr("an ok stream status has no reason")
	}
	var body string
	if s.Resets {
		body = resetCapability
	}
	return writeCoded(w, statusMagic, byte(s.Code), body)
}

// ReadStreamStatus decodes a StreamStatus. Capabilities it does not know in
// an OK are skipped, so that a newer connector can add some.
func ReadStreamStatus(r io.Reader) (StreamStatus, error) {
	code, body, err := readCoded(r, statusMagic)
	if err != nil {
		return StreamStatus{}, err
	}
	s := StreamStatus{Code: StatusCode(code)}
	if s.Code != StatusOK {
		s.Reason = body
		return s, nil
	}
	for _, word := range strings.Fields(body) {
		if word == resetCapability {
			s.Resets = true
		}
	}
	return s, nil
}

// ErrVersion is wrapped when a peer speaks another protocol version.
var ErrVersion = errors.New("unsupported tunnel protocol version")

func checkPrefix(b []byte, magic [2]byte) error {
	if !bytes.Equal(b[:2], magic[:]) {
		return protoErr("bad magic %q", b[:2])
	}
	if b[2] != Version {
		return fmt.Errorf("%w %d (this end speaks %d)", ErrVersion, b[2], Version)
	}
	return nil
}

func writeCoded(w io.Writer, magic [2]byte, code byte, reason string) error {
	reason = truncateUTF8(reason, MaxReason)
	b := make([]byte, 0, 5+len(reason))
	b = append(b, magic[:]...)
	b = append(b, Version, code, byte(len(reason)))
	b = append(b, reason...)
	_, err := w.Write(b)
	return err
}

func readCoded(r io.Reader, magic [2]byte) (code byte, reason string, err error) {
	var fixed [5]byte
	if err := readFull(r, fixed[:]); err != nil {
		return 0, "", err
	}
	if err := checkPrefix(fixed[:3], magic); err != nil {
		return 0, "", err
	}
	b := make([]byte, fixed[4])
	if err := readFull(r, b); err != nil {
		return 0, "", err
	}
	if !utf8.Valid(b) {
		return 0, "", protoErr("reason is not UTF-8")
	}
	return fixed[3], string(b), nil
}

func readFull(r io.Reader, b []byte) error {
	if _, err := io.ReadFull(r, b); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return protoErr("truncated message")
		}
		return err
	}
	return nil
}

func checkService(s string) error {
	if len(s) == 0 || len(s) > MaxServiceName {
		return protoErr("service name length %d: want 1-%d", len(s), MaxServiceName)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return protoErr("invalid service name %q", s)
		}
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
