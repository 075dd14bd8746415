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
	// bytes; starting one needs no authentication).
	maxDeviceLogins  = 10000
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
	status   deviceStatus
	// Set at approval: who approved, with which session, asserting what.
	user    *fieldpass.User
	session string
	rec     loginRecord
}

// sweepLocked drops expired device logins and MFA records. ls.mu is held.
func (ls *loginState) sweepLocked(now time.Time) {
	for h, d := range ls.devices {
		if !now.Before(d.expires) {
			delete(ls.devices, h)
			delete(ls.byUser, d.userCode)
		}
	}
	for id, rec := range ls.mfa {
		if !now.Before(rec.Expires) {
			delete(ls.mfa, id)
		}
	}
	ls.swept = now
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
		ls.mu.Lock()
		ls.sweepLocked(now)
		if len(ls.devices) >= maxDeviceLogins {
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
			interval: deviceLoginInterval, client: ratelimit.ClientAddr(r)}
		ls.devices[d.hash] = d
		ls.byUser[userCode] = d
		ls.mu.Unlock()
		p.log.Info("device login started", "client", d.client)
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
				delete(ls.devices, h)
				delete(ls.byUser, d.userCode)
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
			pollError(w, "slow_down", "polling too fast: wait "+interval.String()+" between polls")
			return
		}
		d.lastPoll = now
		switch d.status {
		case devicePending, deviceIssuing:
			ls.mu.Unlock()
			pollError(w, "authorization_pending", "waiting for approval in the browser")
			return
		case deviceDenied:
			delete(ls.devices, h)
			delete(ls.byUser, d.userCode)
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
			delete(ls.devices, h)
			delete(ls.byUser, d.userCode)
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
	ck, err := r.Cookie(SessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	u, t, err := p.login.db.Authenticate(r.Context(), ck.Value)
	if err != nil {
		if c := fieldpass.ErrorCode(err); c == fieldpass.EINTERNAL || c == fieldpass.EUNAVAILABLE {
			return nil, err
		}
		return nil, nil
	}
	if t.Kind != fieldpass.TokenSession {
		return nil, nil
	}
	return &fieldpass.Caller{User: u, Token: t, ByCookie: true}, nil
}

// deviceForm is the approval form of the verification page.
type deviceForm struct {
	CSRF, UserCode, Email, Roles, TTL string
}

// HandleDeviceLoginPage is the approval page of CLI logins: GET /login/device.
func (p *Portal) HandleDeviceLoginPage() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ls := p.login
		if ls.oidc == nil {
			writePage(w, http.StatusNotFound, notConfiguredPage)
			return
		}
		code := r.URL.Query().Get("user_code")
		c, err := p.sessionFromCookie(r)
		if err != nil {
			p.loginFailed(w, r, err)
			return
		}
		if c == nil {
			ret := "/login/device"
			if uc, ok := normalizeUserCode(code); ok {
				ret += "?" + url.Values{"user_code": {formatUserCode(uc)}}.Encode()
			}
			redirect(w, "/auth/login?"+url.Values{"return": {ret}}.Encode())
			return
		}
		p := page{Title: "Log in the fieldpass command line",
			Paras: []string{"You are logged in as " + c.User.Email + ". Enter the code that fieldpass login shows in your terminal."}}
		form := &deviceForm{CSRF: CSRFToken(r), Email: c.User.Email, TTL: ls.oidc.CLITokenTTL.String()}
		if len(c.User.Roles) > 0 {
			form.Roles = roleList(c.User.Roles)
		}
		if uc, ok := normalizeUserCode(code); ok {
			form.UserCode = formatUserCode(uc)
			now := ls.now()
			ls.mu.Lock()
			if d := ls.byUser[uc]; d != nil && now.Before(d.expires) && d.status == devicePending {
				p.Paras = append(p.Paras, "This login was started from "+d.client+" "+minutes(now.Sub(d.started))+
					" ago; it expires in "+minutes(d.expires.Sub(now))+".")
			}
			ls.mu.Unlock()
		}
		p.Form = form
		writePage(w, http.StatusOK, p)
	}
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
		if action != "approve" && action != "deny" {
			writePage(w, http.StatusBadRequest, page{Title: "Nothing done", Paras: []string{"Choose Approve or Deny."}, Retry: "/login/device"})
			return
		}
		uc, ok := normalizeUserCode(r.PostFormValue("user_code"))
		if !ok {
			writePage(w, http.StatusBadRequest, page{Title: "Invalid code",
				Paras: []string{"A code has 8 letters, like BCDF-GHJK. Check the code in your terminal."}, Retry: "/login/device"})
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
		now := ls.now()
		ls.mu.Lock()
		d := ls.byUser[uc]
		if d == nil || !now.Before(d.expires) || d.status != devicePending {
			ls.mu.Unlock()
			writePage(w, http.StatusNotFound, page{Title: "No such login",
				Paras: []string{"No login waits for the code " + formatUserCode(uc) + ": check it, or run fieldpass login again (codes last 10 minutes and are used once)."},
				Retry: "/login/device"})
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
