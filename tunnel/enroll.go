package tunnel

// EnrollPath is the broker's HTTPS endpoint for connector enrolment.
const EnrollPath = "/api/v1/enroll"

// EnrollRequest is the JSON body a connector POSTs to EnrollPath. The token
// travels in the body, never in a URL, and the private key never leaves the
// device: only its public half is sent.
type EnrollRequest struct {
	Token            string `json:"token"`
	PublicKey        string `json:"public_key"`
	ConnectorVersion string `json:"connector_version,omitempty"`
}

// EnrollResponse is what a successful enrolment returns: everything the
// connector needs to bring its tunnel up.
type EnrollResponse struct {
	DeviceID      string `json:"device_id"`
	DeviceName    string `json:"device_name"`
	TunnelAddress string `json:"tunnel_address"` // the device's address inside WireGuard
	BrokerAddress string `json:"broker_address"` // the broker's address inside WireGuard
	BrokerPort    uint16 `json:"broker_port"`    // TCP port at BrokerAddress
	BrokerKey     string `json:"broker_public_key"`
	// Endpoints are the broker's public UDP addresses (host:port), tried in order.
	Endpoints []string `json:"endpoints"`
	MTU       int      `json:"mtu"`
}

// ErrorResponse is the JSON body of every error from the broker's API.
type ErrorResponse struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
