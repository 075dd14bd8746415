package fieldpass

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"
)

// DeviceState is where a device is in its lifecycle.
type DeviceState string

const (
	// DeviceActive devices are WireGuard peers of the broker and may connect.
	DeviceActive DeviceState = "active"
	// DeviceDisabled devices keep their key but are removed from the broker's
	// peers until enabled again; their live streams are closed.
	DeviceDisabled DeviceState = "disabled"
	// DeviceDecommissioned devices have lost their key for good; the name may
	// be enrolled again with a new token.
	DeviceDecommissioned DeviceState = "decommissioned"
)

// Device is a field device known to the broker.
type Device struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	State      DeviceState       `json:"state"`
	PublicKey  string            `json:"public_key,omitempty"` // WireGuard key, base64
	TunnelAddr netip.Addr        `json:"tunnel_address"`
	CreatedAt  time.Time         `json:"created_at"`
	EnrolledAt time.Time         `json:"enrolled_at"`
	Presence   Presence          `json:"presence"`
	// KeepaliveSeconds is the WireGuard persistent keepalive operators set
	// for this device (MinKeepalive to MaxKeepalive, in whole seconds). It
	// overrides the connector's own --keepalive; 0 (omitted in JSON) means
	// the connector's own setting applies.
	KeepaliveSeconds int `json:"keepalive_seconds,omitempty"`
	// Services are the names of the services the device's connector
	// said it exposes in its last hello (never their targets); nil
	// (omitted in JSON) while no connector has said: one too old to, or
	// none connected yet. A grant naming a service a device is known not
	// to expose is refused unless asked for (--allow-unknown).
	Services []string `json:"services,omitempty"`
}

// The range of a per-device keepalive. Carrier NAT UDP timeouts are commonly
// 30 s to 5 min: below 10 s no NAT needs the traffic; past an hour the
// device is unreachable nearly all the time and offline detection takes
// hours. The connector's own flag allows 1 s to 18 h for tests and odd
// networks; a fleet-wide setting is held to the sane range.
const (
	MinKeepalive = 10 * time.Second
	MaxKeepalive = time.Hour
)

// ValidateKeepalive checks a per-device keepalive: 0 (the connector's own
// setting) or whole seconds from MinKeepalive to MaxKeepalive.
func ValidateKeepalive(d time.Duration) error {
	if d == 0 {
		return nil
	}
	if d%time.Second != 0 || d < MinKeepalive || d > MaxKeepalive {
		return Errorf(EINVALID, "keepalive %s: want whole seconds from %s to %s, or default", d, FormatDuration(MinKeepalive), FormatDuration(MaxKeepalive))
	}
	return nil
}

// Presence is what the broker last saw of a device's tunnel.
type Presence struct {
	Online           bool      `json:"online"`
	LastSeen         time.Time `json:"last_seen,omitempty"`
	Endpoint         string    `json:"endpoint,omitempty"` // the device's public UDP address as seen by the broker
	ConnectorVersion string    `json:"connector_version,omitempty"`
	BrokerID         string    `json:"broker_id,omitempty"` // which broker holds the tunnel
}

var (
	deviceNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)
	labelValueRE = regexp.MustCompile(`^[A-Za-z0-9._-]{0,63}$`)
)

// ValidateDeviceName reports whether name is a valid device name: a DNS label
// (lowercase letters, digits and inner hyphens, at most 63 characters), so it
// is safe in host names, URLs and ssh configs.
func ValidateDeviceName(name string) error {
	if !deviceNameRE.MatchString(name) {
		return Errorf(EINVALID, "invalid device name %q: use 1-63 lowercase letters, digits and inner hyphens", name)
	}
	return nil
}

// ValidateLabels checks label keys and values.
func ValidateLabels(labels map[string]string) error {
	if len(labels) > 32 {
		return Errorf(EINVALID, "too many labels (%d, at most 32)", len(labels))
	}
	for k, v := range labels {
		if !labelKeyRE.MatchString(k) {
			return Errorf(EINVALID, "invalid label key %q", k)
		}
		if !labelValueRE.MatchString(v) {
			return Errorf(EINVALID, "invalid value %q for label %q", v, k)
		}
	}
	return nil
}

// ParseLabel parses "key=value".
func ParseLabel(s string) (key, value string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", Errorf(EINVALID, "invalid label %q: want key=value", s)
	}
	if err := ValidateLabels(map[string]string{k: v}); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// FormatLabels renders labels as sorted "k=v,k=v" for tables and logs.
func FormatLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%s", k, labels[k])
	}
	return strings.Join(parts, ",")
}

// ValidateServiceName checks a service name as used in stream headers and on
// the connector's --service list: 1-63 lowercase letters, digits, '-' or '_'.
func ValidateServiceName(name string) error {
	if len(name) == 0 || len(name) > 63 {
		return Errorf(EINVALID, "invalid service name %q: 1-63 characters", name)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return Errorf(EINVALID, "invalid service name %q: use lowercase letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

// TunnelAddress returns the n-th device address of prefix (n from 0). The
// prefix's first host address is the broker's; devices follow it. Addresses
// are never reused, so an address in an old audit record names one device.
func TunnelAddress(prefix netip.Prefix, n int64) (netip.Addr, error) {
	if n < 0 {
		return netip.Addr{}, Errorf(EINVALID, "negative address index")
	}
	return addAddr(prefix, BrokerTunnelAddress(prefix), n+1)
}

// BrokerTunnelAddress is the broker's own address in prefix: its first host.
func BrokerTunnelAddress(prefix netip.Prefix) netip.Addr {
	return prefix.Masked().Addr().Next()
}

func addAddr(prefix netip.Prefix, a netip.Addr, n int64) (netip.Addr, error) {
	b := a.AsSlice()
	carry := uint64(n)
	for i := len(b) - 1; i >= 0 && carry > 0; i-- {
		sum := uint64(b[i]) + carry
		b[i] = byte(sum)
		carry = sum >> 8
	}
	r, _ := netip.AddrFromSlice(b)
	if carry > 0 || !prefix.Contains(r) || r == lastAddr(prefix) {
		return netip.Addr{}, Errorf(EUNAVAILABLE, "tunnel prefix %s is full", prefix)
	}
	return r, nil
}

// lastAddr is the prefix's broadcast address (IPv4), which no device gets.
func lastAddr(prefix netip.Prefix) netip.Addr {
	b := prefix.Masked().Addr().AsSlice()
	bits := prefix.Bits()
	for i := range b {
		for j := 0; j < 8; j++ {
			if i*8+j >= bits {
				b[i] |= 0x80 >> j
			}
		}
	}
	r, _ := netip.AddrFromSlice(b)
	return r
}

// DeviceEventKind says what a broker saw happen to a device's tunnel.
type DeviceEventKind string

// The kinds of device history.
const (
	DeviceOnline          DeviceEventKind = "online"           // a connector said hello
	DeviceOffline         DeviceEventKind = "offline"          // its session ended or went silent
	DeviceEndpointChanged DeviceEventKind = "endpoint_changed" // roaming: a new public address mid-session
	DeviceVersionChanged  DeviceEventKind = "version_changed"  // connected with another connector version
	DeviceCloneSuspected  DeviceEventKind = "clone_suspected"  // one key flapping between two addresses
	// DeviceHandshakeReset: the broker forgot the WireGuard handshake
	// state of a peer silent past its reset threshold, so that a device
	// whose clock went backwards (reboot without RTC) can handshake again.
	DeviceHandshakeReset DeviceEventKind = "handshake_reset"
)

// DeviceEvent is one row of a device's connectivity history.
type DeviceEvent struct {
	ID               int64           `json:"id"`
	DeviceID         string          `json:"device_id"`
	At               time.Time       `json:"at"`
	Kind             DeviceEventKind `json:"kind"`
	BrokerID         string          `json:"broker_id,omitempty"`
	Endpoint         string          `json:"endpoint,omitempty"`
	PreviousEndpoint string          `json:"previous_endpoint,omitempty"`
	ConnectorVersion string          `json:"connector_version,omitempty"`
	Details          map[string]any  `json:"details,omitempty"`
}

// DefaultDeviceHistoryLimit is how many events of a device's history a
// query returns when it asks for no particular number: the newest, enough
// for weeks of a flapping link without paging through months.
const DefaultDeviceHistoryLimit = 1000
