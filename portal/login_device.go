package portal

// The device-style login of the CLI (RFC 8628 in shape): the CLI starts a
// login and gets a secret device code and a short user code; the person
// opens the verification page in a browser where they are logged in to the
// portal, confirms the user code, and the CLI, polling with the device code,
// receives a CLI token once. Logins in progress live in memory: a broker
// restart, or a poll that reaches another broker, means running
// fieldpass login again.

import (
	"crypto/sha256"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/ratelimit"
)

const (
	deviceLoginTTL      = 10 * time.Minute
	deviceLoginInterval = 5 * time.Second
	// slowDownStep is added to a client's interval each time it polls too
	// fast (RFC 8628 3.5).
	slowDownStep = 5 * time.Second
	// pollTolerance forgives network jitter: a poll this much early is
	// not too fast.
	pollTolerance = time.Second
	// maxDeviceLogins bounds the logins in progress (each is a few hundred
	// bytes; starting one needs no authentication). Past it, the oldest
	// pending login of the client holding the most is dropped, so a flood
	// evicts itself rather than everyone else (issue 10).
	maxDeviceLogins = 10000
	// maxDeviceLoginsPerClient bounds one client address's logins in
	// progress (an IPv6 address by its /64): a start past it drops that
	// client's oldest pending login. A person needs one.
	maxDeviceLoginsPerClient = 5
	// maxAgentLen clips the client's User-Agent shown on the approval page.
	maxAgentLen      = 64
	deviceCodePrefix = "fpd_"
	// userCodeAlphabet has no vowels (no words) and no look-alikes
	// (0/O, 1/I/L are absent): 20^8, about 2^34.6 codes (RFC 8628 6.1).
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8
)

type deviceStatus int

const (
	devicePending deviceStatus = iota
	deviceApproved
	deviceDenied
	deviceIssuing // a poll is issuing the token right now
)

// deviceLogin is one login in progress.
type deviceLogin struct {
	hash     [32]byte
	userCode string // userCodeLen characters of userCodeAlphabet, no dash
	started  time.Time
	expires  time.Time
	interval time.Duration
	lastPoll time.Time
	client   string // address that started it, shown on the approval page
	key      string // client's limiter key (ratelimit.ClientKey): the per-client cap counts by it
	agent    string // the client's User-Agent (its own claim), shown on the approval page
	status   deviceStatus
	// Set at approval: who approved, with which session, asserting what.
	user    *fieldpass.User
	session string
	rec     loginRecord
}

// sweepLocked drops expired device logins and MFA records. ls.mu is held.
func (ls *loginState) sweepLocked(now time.Time) {
	for _, d := range ls.devices {
		if !now.Before(d.expires) {
			ls.dropDeviceLocked(d)
		}
	}
	for id, rec := range ls.mfa {
		if !now.Before(rec.Expires) {
			delete(ls.mfa, id)
		}
	}
	ls.swept = now
}

// dropDeviceLocked forgets device login d. ls.mu is held.
func (ls *loginState) dropDeviceLocked(d *deviceLogin) {
	delete(ls.devices, d.hash)
	delete(ls.byUser, d.userCode)
	list := ls.byClient[d.key]
	for i, x := range list {
		if x == d {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(ls.byClient, d.key)
	} else {
		ls.byClient[d.key] = list
	}
}

// oldestPending returns the oldest login of list still waiting for
// approval, or nil.
func oldestPending(list []*deviceLogin) *deviceLogin {
	for _, d := range list { // in start order
		if d.status == devicePending {
			return d
		}
	}
	return nil
}

// makeRoomLocked makes room for a login started by the client with key:
// past the client's cap, its own oldest pending login goes; past the
// global cap, the oldest pending login of the client holding the most. It
// reports false when nothing can go (every login is approved and waits
// for its poll). ls.mu is held.
func (ls *loginState) makeRoomLocked(key string) bool {
	if list := ls.byClient[key]; len(list) >= maxDeviceLoginsPerClient {
		if d := oldestPending(list); d != nil {
			ls.dropDeviceLocked(d)
		}
	}
	for len(ls.devices) >= maxDeviceLogins {
		var victim *deviceLogin
		most := 0
		for _, list := range ls.byClient {
			if d := oldestPending(list); d != nil && (len(list) > most || len(list) == most && d.started.Before(victim.started)) {
				victim, most = d, len(list)
			}
		}
		if victim == nil {
			return false
		}
		ls.dropDeviceLocked(victim)
	}
	return true
}

// clientAgent is the User-Agent of r as the approval page may show it:
// printable ASCII, clipped; "unknown" without one.
func clientAgent(r *http.Request) string {
	ua := strings.Map(func(c rune) rune {
		if c < 0x20 || c > 0x7e {
			return -1
		}
		return c
	}, r.UserAgent())
	if len(ua) > maxAgentLen {
		ua = ua[:maxAgentLen] + "…"
	}
	if ua == "" {
		return "unknown"
	}
	return ua
}

func formatUserCode(c string) string { return c[:4] + "-" + c[4:] }

// normalizeUserCode accepts what people type: any case, with or without
// the dash or spaces.
func normalizeUserCode(s string) (string, bool) {
	s = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(s)))
	if len(s) != userCodeLen {
		return "", false
	}
	for i := 0; i < len(s); i++ {
		if !strings.ContainsRune(userCodeAlphabet, rune(s[i])) {
			return "", false
		}
	}
	return s, true
}

func (ls *loginState) newUserCode() (string, error) {
	out := make([]byte, 0, userCodeLen)
	buf := make([]byte, 16)
	for len(out) < userCodeLen {
		if _, err := ls.rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// Rejection sampling: 240 is the largest multiple of 20 <= 256.
			if b < 240 && len(out) < userCodeLen {
				out = append(out, userCodeAlphabet[int(b)%len(userCodeAlphabet)])
			}
		}
	}
	return string(out), nil
}

func hashDeviceCode(code string) [32]byte { return sha256.Sum256([]byte(code)) }

// HandleDeviceLoginStart starts a CLI login: POST /api/v1/login/device.
func (p *Portal) HandleDeviceLoginStart() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil || ls.origin == nil {
			p.writeError(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE,
				"this broker has no identity provider configured: ask an operator for a token (fieldpass-broker user token) and set FIELDPASS_TOKEN"))
			return
		}
		raw, err := ls.randomString(32)
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		deviceCode := deviceCodePrefix + raw
		now := ls.now()
		client := ratelimit.ClientAddr(r)
		key := ratelimit.ClientKey(client)
		ls.mu.Lock()
		ls.sweepLocked(now)
		if !ls.makeRoomLocked(key) {
			ls.mu.Unlock()
			p.writeError(w, r, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "too many logins in progress: try again in a few minutes"))
			return
		}
		var userCode string
		for {
			if userCode, err = ls.newUserCode(); err != nil || ls.byUser[userCode] == nil {
				break
			}
		}
		if err != nil {
			ls.mu.Unlock()
			p.writeError(w, r, err)
			return
		}
		d := &deviceLogin{hash: hashDeviceCode(deviceCode), userCode: userCode, started: now, expires: now.Add(deviceLoginTTL),
			interval: deviceLoginInterval, client: client, key: key, agent: clientAgent(r)}
		ls.devices[d.hash] = d
		ls.byUser[userCode] = d
		ls.byClient[key] = append(ls.byClient[key], d)
		ls.mu.Unlock()
		p.log.Info("device login started", "client", d.client, "agent", d.agent)
		httpapi.WriteJSON(w, http.StatusOK, httpapi.DeviceLoginStart{
			DeviceCode:      deviceCode,
			UserCode:        formatUserCode(userCode),
			VerificationURI: ls.origin.String() + "/login/device",
			ExpiresIn:       int(deviceLoginTTL / time.Second),
			Interval:        int(deviceLoginInterval / time.Second),
		})
	}
}

// pollError is a poll's answer before success: 400 with an RFC 8628 code.
func pollError(w http.ResponseWriter, code, message string) {
	httpapi.WriteJSON(w, http.StatusBadRequest, httpapi.ErrorResponse{Code: code, Message: message})
}

// HandleDeviceLoginToken answers the CLI's polls: POST /api/v1/login/device/token.
func (p *Portal) HandleDeviceLoginToken() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		var req httpapi.DeviceLoginPoll
		if err := httpapi.DecodeJSON(w, r, 4<<10, &req); err != nil {
			p.writeError(w, r, err)
			return
		}
		h := hashDeviceCode(req.DeviceCode)
		now := ls.now()
		ls.mu.Lock()
		d := ls.devices[h]
		if d == nil || !now.Before(d.expires) {
			if d != nil {
				ls.dropDeviceLocked(d)
			}
			ls.mu.Unlock()
			pollError(w, "expired", "this login is unknown, expired or already used: run fieldpass login again")
			return
		}
		if !d.lastPoll.IsZero() && now.Sub(d.lastPoll) < d.interval-pollTolerance {
			d.interval += slowDownStep
			d.lastPoll = now
			interval := d.interval
			ls.mu.Unlock()
			pollError(w, "slow_down", "polling too fast: wait "+fieldpass.FormatDuration(interval)+" between polls")
			return
		}
		d.lastPoll = now
		switch d.status {
		case devicePending, deviceIssuing:
			ls.mu.Unlock()
			pollError(w, "authorization_pending", "waiting for approval in the browser")
			return
		case deviceDenied:
			ls.dropDeviceLocked(d)
			ls.mu.Unlock()
			pollError(w, "denied", "the login was denied in the browser")
			return
		}
		d.status = deviceIssuing
		user, session, rec := d.user, d.session, d.rec
		ls.mu.Unlock()

		ctx := r.Context()
		token, t, err := ls.db.IssueToken(ctx, fieldpass.UserActor(user.Email), user.Email, fieldpass.TokenCLI, ls.oidc.CLITokenTTL)
		if err == nil {
			rec.Expires = t.ExpiresAt
			err = p.recordLogin(ctx, t, rec, map[string]any{"method": "device", "client": ratelimit.ClientAddr(r), "approved_by": session})
		}
		ls.mu.Lock()
		if err != nil && fieldpass.ErrorCode(err) != fieldpass.EFORBIDDEN {
			d.status = deviceApproved // a later poll may succeed
		} else {
			ls.dropDeviceLocked(d)
		}
		ls.mu.Unlock()
		if err != nil {
			p.writeError(w, r, err)
			return
		}
		p.log.Info("login", "email", user.Email, "method", "device", "token_id", t.ID, "mfa", rec.MFA, "client", ratelimit.ClientAddr(r))
		httpapi.WriteJSON(w, http.StatusOK, httpapi.DeviceLoginToken{Token: token, Email: user.Email, Roles: user.Roles, ExpiresAt: t.ExpiresAt})
	}
}

// sessionFromCookie authenticates the portal cookie of a page request;
// nil if there is no usable session.
func (p *Portal) sessionFromCookie(r *http.Request) (*fieldpass.Caller, error) {
	token := p.SessionToken(r)
	if token == "" {
		return nil, nil
	}
	u, t, err := p.login.db.Authenticate(r.Context(), token)
	if err != nil {
		if c := fieldpass.ErrorCode(err); c == fieldpass.EINTERNAL || c == fieldpass.EUNAVAILABLE {
			return nil, err
		}
		return nil, nil
	}
	if t.Kind != fieldpass.TokenSession {
		return nil, nil
	}
	return &fieldpass.Caller{User: u, Token: t, ByCookie: true, Client: ratelimit.ClientAddr(r)}, nil
}

// deviceForm is the approval form of the verification page. Without
// Review, it asks for the code; with it, it shows the login the code names
// and offers Approve and Deny.
type deviceForm struct {
	CSRF, UserCode, Email, Roles, TTL string
	Review                            bool
	Agent, Client, Started, Expires   string // the login under review
}

// HandleDeviceLoginPage is the approval page of CLI logins: GET /login/device.
// It never fills the code in from the link: a person must type the code
// their own terminal shows, so a link an attacker sends (with the
// attacker's code in it) approves nothing in one click (issue 10).
func (p *Portal) HandleDeviceLoginPage() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		c, err := p.sessionFromCookie(r)
		if err != nil {
			p.loginFailed(w, r, err)
			return
		}
		if c == nil {
			// The code in a link is dropped here too: it would come back
			// only to be ignored.
			redirect(w, "/auth/login?"+url.Values{"return": {"/login/device"}}.Encode())
			return
		}
		pg := page{Title: "Log in the fieldpass command line",
			Paras: []string{"You are logged in as " + c.User.Email + ". Type the code that fieldpass login shows in your own terminal.",
				"Never enter a code someone else sent you: it would log them in as you."}}
		pg.Form = p.deviceForm(r, c)
		writePage(w, http.StatusOK, pg)
	}
}

// deviceForm is the approval form for caller c, without a code.
func (p *Portal) deviceForm(r *http.Request, c *fieldpass.Caller) *deviceForm {
	form := &deviceForm{CSRF: CSRFToken(r), Email: c.User.Email, TTL: fieldpass.FormatDuration(p.login.oidc.CLITokenTTL)}
	if len(c.User.Roles) > 0 {
		form.Roles = roleList(c.User.Roles)
	}
	return form
}

// minutes renders a short duration for people: "2 minutes".
func minutes(d time.Duration) string {
	switch m := int(d.Round(time.Minute) / time.Minute); {
	case m < 1:
		return "less than a minute"
	case m == 1:
		return "1 minute"
	default:
		return strconv.Itoa(m) + " minutes"
	}
}

// HandleDeviceLoginApprove approves or denies a CLI login: POST /login/device.
func (p *Portal) HandleDeviceLoginApprove() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		c := fieldpass.CallerFromContext(r.Context())
		// Only a browser session approves: a CLI token minting itself a
		// successor would outlive its login and skip the identity provider.
		if !c.ByCookie || c.Token.Kind != fieldpass.TokenSession {
			writePage(w, http.StatusForbidden, page{Title: "Approve in the browser",
				Paras: []string{"A command-line login is approved from a browser logged in to the portal, not with a token."}})
			return
		}
		if !ls.approves.Allow(c.User.Email) {
			w.Header().Set("Retry-After", "10")
			writePage(w, http.StatusTooManyRequests, page{Title: "Too many attempts", Paras: []string{"Too many approvals from your account: wait a minute and try again."}, Retry: "/login/device"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		action := r.PostFormValue("action")
		if action != "approve" && action != "deny" && action != "review" {
			writePage(w, http.StatusBadRequest, page{Title: "Nothing done", Paras: []string{"Choose Approve or Deny."}, Retry: "/login/device"})
			return
		}
		uc, ok := normalizeUserCode(r.PostFormValue("user_code"))
		if !ok {
			writePage(w, http.StatusBadRequest, page{Title: "Invalid code",
				Paras: []string{"A code has 8 letters, like BCDF-GHJK. Check the code in your terminal."}, Retry: "/login/device"})
			return
		}
		if action == "review" {
			p.reviewDeviceLogin(w, r, c, uc)
			return
		}
		var rec loginRecord
		if action == "approve" {
			rec = p.sessionRecord(r, c)
			if p := ls.oidc.Provider.MFA(); p.Require && !rec.MFA {
				writePage(w, http.StatusForbidden, page{Title: "Multi-factor login required",
					Paras: []string{p.Missing(rec.AMR, rec.ACR)}, Retry: "/auth/login?return=%2Flogin%2Fdevice"})
				return
			}
		}
		d := ls.pendingLocked(w, uc)
		if d == nil {
			return
		}
		if action == "deny" {
			d.status = deviceDenied
			ls.mu.Unlock()
			p.log.Info("device login denied", "email", c.User.Email, "user_code", formatUserCode(uc))
			writePage(w, http.StatusOK, page{Title: "Login denied", Paras: []string{"The command line that showed " + formatUserCode(uc) + " gets no token."}})
			return
		}
		d.status, d.user, d.session, d.rec = deviceApproved, c.User, c.Token.ID, rec
		ls.mu.Unlock()
		p.log.Info("device login approved", "email", c.User.Email, "user_code", formatUserCode(uc), "session_token_id", c.Token.ID)
		writePage(w, http.StatusOK, page{Title: "Login approved",
			Paras: []string{"The command line is logged in as " + c.User.Email + ". You can close this page and return to your terminal."}})
	}
}

// pendingLocked returns the login waiting for the user code uc with ls.mu
// held, or answers the page that says there is none (and returns nil, the
// lock released).
func (ls *loginState) pendingLocked(w http.ResponseWriter, uc string) *deviceLogin {
	now := ls.now()
	ls.mu.Lock()
	d := ls.byUser[uc]
	if d == nil || !now.Before(d.expires) || d.status != devicePending {
		ls.mu.Unlock()
		writePage(w, http.StatusNotFound, page{Title: "No such login",
			Paras: []string{"No login waits for the code " + formatUserCode(uc) + ": check it, or run fieldpass login again (codes last 10 minutes and are used once)."},
			Retry: "/login/device"})
		return nil
	}
	return d
}

// sessionRecord is what the login of the caller's session asserted.
func (p *Portal) sessionRecord(r *http.Request, c *fieldpass.Caller) loginRecord {
	ls := p.login
	ls.mu.Lock()
	rec, ok := ls.mfa[c.Token.ID]
	ls.mu.Unlock()
	if ok {
		return rec
	}
	rec, err := p.lookupLogin(r.Context(), c.Token)
	if err != nil {
		p.log.Error("look up login of token", "token_id", c.Token.ID, "err", err)
		return loginRecord{}
	}
	ls.remember(c.Token.ID, rec)
	return rec
}

// reviewDeviceLogin shows the login that the typed code uic names, with what
// approving it gives (RFC 8628 5.4: the person must be able to tell a
// login they started from one they did not), and the Approve and Deny
// buttons.
func (p *Portal) reviewDeviceLogin(w http.ResponseWriter, r *http.Request, c *fieldpass.Caller, uc string) {
	ls := p.login
	d := ls.pendingLocked(w, uc)
	if d == nil {
		return
	}
	now := ls.now()
	form := p.deviceForm(r, c)
	form.Review, form.UserCode = true, formatUserCode(uc)
	form.Agent, form.Client = d.agent, d.client
	form.Started = d.started.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + minutes(now.Sub(d.started)) + " ago)"
	form.Expires = minutes(d.expires.Sub(now))
	ls.mu.Unlock()
	writePage(w, http.StatusOK, page{Title: "Approve this command-line login?", Form: form,
		Paras: []string{"Check that this is the login you started just now, from your own terminal."}})
}
