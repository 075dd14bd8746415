package access

import (
	"context"
	"time"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/postgres"
)

// DefaultEnrollmentTTL is how long an enrolment token made in the portal
// stays valid unless the admin says otherwise.
const DefaultEnrollmentTTL = 24 * time.Hour

// CreateEnrollmentToken makes a single-use token that enrols one device as
// name with labels (admins only), audited. The token is returned once.
func (s *Service) CreateEnrollmentToken(ctx context.Context, c *fieldpass.Caller, name string, labels map[string]string, ttl time.Duration) (string, time.Time, error) {
	if err := s.Allow(c, fieldpass.AuditTokenCreate, postgres.DeviceTarget(name), fieldpass.RoleAdmin); err != nil {
		return "", time.Time{}, err
	}
	if ttl == 0 {
		ttl = DefaultEnrollmentTTL
	}
	tok, exp, err := s.cfg.DB.CreateEnrollmentTokenAudited(ctx, fieldpass.UserActor(c.User.Email), name, labels, ttl)
	if err != nil {
		return "", time.Time{}, err
	}
	s.log.Info("enrolment token created", "device", name, "by", c.User.Email, "expires", exp)
	return tok, exp, nil
}

// SetDeviceState disables, enables or decommissions a device (admins
// only), audited. Its live sessions end within a second; a disabled or
// decommissioned device's tunnel is refused.
func (s *Service) SetDeviceState(ctx context.Context, c *fieldpass.Caller, name string, state fieldpass.DeviceState) (*fieldpass.Device, error) {
	if err := s.Allow(c, stateAction(state), postgres.DeviceTarget(name), fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	d, err := s.cfg.DB.SetDeviceStateAudited(ctx, fieldpass.UserActor(c.User.Email), name, state)
	if err != nil {
		return nil, err
	}
	s.log.Info("device state set", "device", name, "state", state, "by", c.User.Email)
	return d, nil
}

// SetDeviceKeepalive sets a device's WireGuard keepalive (0: the
// connector's own), admins only, audited; a connected device takes it at
// once.
func (s *Service) SetDeviceKeepalive(ctx context.Context, c *fieldpass.Caller, name string, keepalive time.Duration) (*fieldpass.Device, error) {
	if err := s.Allow(c, fieldpass.AuditDeviceKeepalive, postgres.DeviceTarget(name), fieldpass.RoleAdmin); err != nil {
		return nil, err
	}
	return s.cfg.DB.SetDeviceKeepaliveAudited(ctx, fieldpass.UserActor(c.User.Email), name, keepalive)
}

// stateAction is the audit action of setting a device's state.
func stateAction(state fieldpass.DeviceState) string {
	switch state {
	case fieldpass.DeviceDisabled:
		return fieldpass.AuditDeviceDisable
	case fieldpass.DeviceDecommissioned:
		return fieldpass.AuditDeviceDecommission
	}
	return fieldpass.AuditDeviceEnable
}
