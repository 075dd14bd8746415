package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/tunnel"
)

// Client speaks the broker's API for the fieldpass CLI and the end-to-end
// tests. Set its fields, if at all, before first use; a Client is safe for
// concurrent use.
//
// Every method returns a *fieldpass.Error on failure: the broker's own code
// and message when it answered with one, unavailable when it could not be
// reached, internal when it answered something that is not the API. The
// token travels only in the Authorization header, never in a URL, and no
// error repeats it.
type Client struct {
	// BaseURL is the broker's origin, https://broker.example.com (a path
	// prefix is kept). Plain http is refused unless the host is loopback.
	BaseURL string
	// Token is a broker-issued token (fpt_...); empty sends none.
	Token string
	// HTTP is the client used; nil means one with a 60 s timeout that does
	// not follow redirects.
	HTTP *http.Client
	// UserAgent is sent with every request; default "fieldpass/VERSION".
	UserAgent string
}

// NewClient returns a Client for the broker at baseURL, authenticating with
// token.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: baseURL, Token: token}
}

// defaultHTTP refuses redirects: the API never redirects, and a redirect
// answered by something in between should fail loudly, not be followed
// with our credentials.
var defaultHTTP = &http.Client{
	Timeout: 60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// maxResponseBody bounds what the client reads of one answer: a page of
// 1000 audit events with large details stays well below it.
const maxResponseBody = 64 << 20

// Me returns who the token belongs to.
func (c *Client) Me(ctx context.Context) (*Me, error) {
	var me Me
	if err := c.do(ctx, http.MethodGet, "/api/v1/me", nil, nil, &me, true); err != nil {
		return nil, err
	}
	return &me, nil
}

// Devices lists the devices the caller may reach (admins and auditors: all).
func (c *Client) Devices(ctx context.Context) ([]DeviceView, error) {
	var out []DeviceView
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices", nil, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// CreateGrant creates a grant (admins).
func (c *Client) CreateGrant(ctx context.Context, g GrantCreate) (*fieldpass.Grant, error) {
	var out fieldpass.Grant
	if err := c.do(ctx, http.MethodPost, "/api/v1/grants", nil, g, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// Grants lists grants, newest first: all for admins and auditors, the
// caller's own for everyone else.
func (c *Client) Grants(ctx context.Context, q GrantQuery) ([]*fieldpass.Grant, error) {
	v := url.Values{}
	setNonEmpty(v, "subject", q.Subject)
	setNonEmpty(v, "device", q.Device)
	if q.Active {
		v.Set("active", "true")
	}
	var out []*fieldpass.Grant
	if err := c.do(ctx, http.MethodGet, "/api/v1/grants", v, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// RevokeGrant revokes the grant id now (admins) and returns it revoked.
func (c *Client) RevokeGrant(ctx context.Context, id string) (*fieldpass.Grant, error) {
	return c.RevokeGrantBecause(ctx, id, "")
}

// RevokeGrantBecause is RevokeGrant with why (optional), kept on the grant
// and in the audit log.
func (c *Client) RevokeGrantBecause(ctx context.Context, id, reason string) (*fieldpass.Grant, error) {
	var body any
	if reason != "" {
		body = GrantRevoke{Reason: reason}
	}
	var out fieldpass.Grant
	if err := c.do(ctx, http.MethodPost, "/api/v1/grants/"+idSegment(id)+"/revoke", nil, body, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateRequest asks for access for the caller.
func (c *Client) CreateRequest(ctx context.Context, r RequestCreate) (*fieldpass.AccessRequest, error) {
	var out fieldpass.AccessRequest
	if err := c.do(ctx, http.MethodPost, "/api/v1/requests", nil, r, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// Requests lists access requests, newest first: all for approvers, admins
// and auditors (unless q.Mine), the caller's own for everyone else.
func (c *Client) Requests(ctx context.Context, q RequestQuery) ([]*fieldpass.AccessRequest, error) {
	v := url.Values{}
	setNonEmpty(v, "status", q.Status)
	if q.Mine {
		v.Set("mine", "true")
	}
	var out []*fieldpass.AccessRequest
	if err := c.do(ctx, http.MethodGet, "/api/v1/requests", v, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// Request returns the access request id (the caller's own, or any for
// approvers, admins and auditors).
func (c *Client) Request(ctx context.Context, id string) (*fieldpass.AccessRequest, error) {
	var out fieldpass.AccessRequest
	if err := c.do(ctx, http.MethodGet, "/api/v1/requests/"+idSegment(id), nil, nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// DecideRequest approves or denies the pending request id (approvers and
// admins; never one's own), with an optional comment for the requester. An
// approved request carries its GrantID.
func (c *Client) DecideRequest(ctx context.Context, id string, approve bool, comment string) (*fieldpass.AccessRequest, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var body any
	if comment != "" {
		body = RequestDecision{Comment: comment}
	}
	var out fieldpass.AccessRequest
	if err := c.do(ctx, http.MethodPost, "/api/v1/requests/"+idSegment(id)+"/"+verb, nil, body, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// Sessions lists sessions, newest first: all for admins and auditors, the
// caller's own for everyone else.
func (c *Client) Sessions(ctx context.Context, q SessionQuery) ([]*fieldpass.Session, error) {
	v := url.Values{}
	setNonEmpty(v, "device", q.Device)
	setNonEmpty(v, "user", q.User)
	setTime(v, "since", q.Since)
	if q.Open {
		v.Set("open", "true")
	}
	setLimit(v, q.Limit)
	var out []*fieldpass.Session
	if err := c.do(ctx, http.MethodGet, "/api/v1/sessions", v, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// EndSession ends the open session id (admins), recorded as ended_by_admin.
func (c *Client) EndSession(ctx context.Context, id string) (*fieldpass.Session, error) {
	return c.EndSessionWhy(ctx, id, "")
}

// EndSessionWhy is EndSession with the admin's reason, recorded in the
// audit log.
func (c *Client) EndSessionWhy(ctx context.Context, id, reason string) (*fieldpass.Session, error) {
	var body any
	if reason != "" {
		body = SessionEnd{Reason: reason}
	}
	var out fieldpass.Session
	if err := c.do(ctx, http.MethodPost, "/api/v1/sessions/"+idSegment(id)+"/end", nil, body, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// Audit lists audit events in seq order (auditors and admins).
func (c *Client) Audit(ctx context.Context, q AuditQuery) ([]fieldpass.AuditEvent, error) {
	v := url.Values{}
	setTime(v, "since", q.Since)
	setNonEmpty(v, "actor", q.Actor)
	setNonEmpty(v, "action", q.Action)
	setNonEmpty(v, "target", q.Target)
	setLimit(v, q.Limit)
	var out []fieldpass.AuditEvent
	if err := c.do(ctx, http.MethodGet, "/api/v1/audit", v, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// DeviceHistory returns the connectivity history of the device name since
// since (zero: all of it), newest first, at most limit rows (0: the
// broker's default). Admins and auditors.
func (c *Client) DeviceHistory(ctx context.Context, name string, since time.Time, limit int) ([]*fieldpass.DeviceEvent, error) {
	v := url.Values{}
	setTime(v, "since", since)
	setLimit(v, limit)
	var out []*fieldpass.DeviceEvent
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+idSegment(name)+"/history", v, nil, &out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// StaleReport reports forgotten devices, grants and vendor accounts:
// devices not seen for notSeen, devices with no session for noSession (0:
// the broker's defaults, 30 and 90 days). Admins and auditors.
func (c *Client) StaleReport(ctx context.Context, notSeen, noSession time.Duration) (*fieldpass.StaleReport, error) {
	v := url.Values{}
	setDuration(v, "not_seen", notSeen)
	setDuration(v, "no_session", noSession)
	var out fieldpass.StaleReport
	if err := c.do(ctx, http.MethodGet, "/api/v1/reports/stale", v, nil, &out, true); err != nil {
		return nil, err
	}
	return &out, nil
}

// StartDeviceLogin starts a device-style login: show the person UserCode
// and VerificationURI, then PollDeviceLogin every Interval seconds. It
// sends no token.
func (c *Client) StartDeviceLogin(ctx context.Context) (*DeviceLoginStart, error) {
	var out DeviceLoginStart
	if err := c.do(ctx, http.MethodPost, "/api/v1/login/device", nil, struct{}{}, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

// PollDeviceLogin asks whether the login deviceCode started was approved.
// Until it is, the error is a *fieldpass.Error whose Code is the broker's:
// "authorization_pending" (poll again), "slow_down" (poll less often),
// "expired" or "denied" (stop). It sends no token.
func (c *Client) PollDeviceLogin(ctx context.Context, deviceCode string) (*DeviceLoginToken, error) {
	var out DeviceLoginToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/login/device/token", nil, DeviceLoginPoll{DeviceCode: deviceCode}, &out, false); err != nil {
		return nil, err
	}
	return &out, nil
}

// idSegment is id as one escaped path segment. An id that would change the
// path's meaning ("", ".", "..") becomes one the broker refuses as invalid.
func idSegment(id string) string {
	if id == "" || id == "." || id == ".." {
		id = "-"
	}
	return url.PathEscape(id)
}

func setNonEmpty(v url.Values, k, s string) {
	if s != "" {
		v.Set(k, s)
	}
}

func setTime(v url.Values, k string, t time.Time) {
	if !t.IsZero() {
		v.Set(k, t.UTC().Format(time.RFC3339Nano))
	}
}

// setDuration sends a positive d as whole days (30d) when it is, else as
// a Go duration (36h0m0s).
func setDuration(v url.Values, k string, d time.Duration) {
	switch {
	case d <= 0:
	case d%(24*time.Hour) == 0:
		v.Set(k, strconv.FormatInt(int64(d/(24*time.Hour)), 10)+"d")
	default:
		v.Set(k, d.String())
	}
}

func setLimit(v url.Values, n int) {
	if n != 0 {
		v.Set("limit", strconv.Itoa(n))
	}
}

// do sends one request and decodes a 2xx answer's JSON into out. body, if
// not nil, is sent as JSON. auth says whether to send the token.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any, auth bool) error {
	base, err := fieldpass.ParseBrokerURL(c.BaseURL)
	if err != nil {
		return err
	}
	u := base.JoinPath(path)
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fieldpass.Errorf(fieldpass.EINVALID, "encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fieldpass.Errorf(fieldpass.EINVALID, "build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	ua := c.UserAgent
	if ua == "" {
		ua = "fieldpass/" + fieldpass.Version
	}
	req.Header.Set("User-Agent", ua)
	if auth && c.Token != "" {
		// A malformed token is refused here, before it travels; the
		// message does not repeat it.
		if err := fieldpass.CheckToken(c.Token); err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		return unreachable(ctx, base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return answerError(base.Host, resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBody)).Decode(out); err != nil {
		if ctx.Err() != nil {
			return unreachable(ctx, base.Host, err)
		}
		return fieldpass.Errorf(fieldpass.EINTERNAL, "unexpected answer from the broker at %s to %s %s: %w", base.Host, method, path, err)
	}
	return nil
}

// unreachable describes a request that got no answer.
func unreachable(ctx context.Context, host string, err error) error {
	if ctx.Err() != nil {
		return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "request to the broker at %s stopped: %w", host, ctx.Err())
	}
	// url.Error repeats method and URL; the cause is what helps. The URL
	// holds no secret, but the message reads better without it.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fieldpass.Errorf(fieldpass.EUNAVAILABLE, "cannot reach the broker at %s: %w", host, err)
}

// answerError turns a non-2xx answer into a *fieldpass.Error: the broker's
// code and message if the body is our ErrorResponse, else one derived from
// the status.
func answerError(host string, resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e tunnel.ErrorResponse
	if json.Unmarshal(raw, &e) == nil && e.Code != "" {
		return &fieldpass.Error{Code: e.Code, Message: e.Message}
	}
	code := codeOf(resp.StatusCode)
	return fieldpass.Errorf(code, "the broker at %s answered %s", host, resp.Status)
}

// Logout revokes the client's own token at the broker.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/auth/logout", nil, nil, nil, true)
}
