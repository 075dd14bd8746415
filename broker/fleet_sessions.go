package broker

import (
	"context"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
)

// OpenFor opens, for a person whose connect reached another broker of the
// fleet, a session on a device held here (brokerlink.Holder). The serving
// broker authenticated the request; the user and the token are read afresh
// from the shared database, and the session is decided, recorded and
// policed here by the same rules as a connect of our own, so a token
// revoked or a user disabled a moment ago is refused here too.
func (m *Sessions) OpenFor(ctx context.Context, req brokerlink.OpenRequest) (brokerlink.Session, error) {
	user, err := m.db.User(ctx, req.User)
	if err != nil {
		if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
			return nil, fieldpass.Deny(fieldpass.DenyUnauthenticated, fieldpass.Errorf(fieldpass.EFORBIDDEN, "user %s not found", req.User))
		}
		return nil, err
	}
	caller := &fieldpass.Caller{User: user, MFA: req.MFA, Client: req.ClientAddr, ServedBy: req.ServedBy}
	if req.TokenID != "" {
		tok, err := m.db.Token(ctx, req.TokenID)
		if err != nil {
			return nil, fieldpass.Deny(fieldpass.DenyUnauthenticated, fieldpass.Errorf(fieldpass.EFORBIDDEN, "token %s: %s", req.TokenID, fieldpass.ErrorMessage(err)))
		}
		if tok.Email != user.Email {
			return nil, fieldpass.Deny(fieldpass.DenyUnauthenticated, fieldpass.Errorf(fieldpass.EFORBIDDEN, "token %s is not %s's", req.TokenID, user.Email))
		}
		caller.Token = tok
	}
	s, err := m.Open(ctx, caller, req.Device, req.Service, req.ClientAddr)
	if err != nil {
		return nil, err
	}
	return s, nil
}

var _ brokerlink.Holder = (*Sessions)(nil)

// openAtHolder carries a connect for a device that is not connected here
// to the broker of the fleet that holds it; ok is false when no other
// broker does (the refusal stands). The holder decides, records and
// polices the session; here it is relayed (Session.remote).
func (m *Sessions) openAtHolder(ctx context.Context, caller *fieldpass.Caller, device, service, clientAddr string) (s *Session, err error, ok bool) {
	if m.linkToHolder == nil || caller == nil || caller.User == nil {
		return nil, nil, false
	}
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	dev, err := m.db.Device(ctx, device)
	if err != nil {
		return nil, nil, false
	}
	link, holder, ok := m.linkToHolder(ctx, dev.ID)
	if !ok {
		return nil, nil, false
	}
	req := brokerlink.OpenRequest{User: caller.User.Email, MFA: caller.MFA, Device: device, Service: service,
		ClientAddr: clientAddr, ServedBy: m.brokerID}
	if caller.Token != nil {
		req.TokenID = caller.Token.ID
	}
	r, err := link.Open(ctx, req)
	if err != nil {
		return nil, err, true
	}
	m.log.Info("session opened at the device's broker", "session", r.ID(), "user", req.User, "device", device,
		"service", service, "holder", holder)
	return &Session{m: m, rec: r.Record(), grantEnd: r.GrantEnd(), remote: r}, nil, true
}
