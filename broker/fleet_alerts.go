package broker

import (
	"context"
	"errors"
	"time"
)

// Alerts in a fleet. Each broker raises the device alerts of what it saw,
// naming the device's id as their subject, and the Notifier claims each in
// the shared database before sending it (alerts.Config.Claims), so one
// event is one alert whichever brokers saw it. One more rule keeps a device
// that moved to another broker from being reported offline by a broker it
// left: seenElsewhere.

// seenElsewhere reports whether another broker of the fleet holds device
// id now (its lease, by the database's clock), or recorded it online or
// offline after armed, when this broker's device_offline timer for it was
// armed (its newest presence event in the device's history): then the
// timer is out of date, since the device came back there, and that broker
// arms its own timer when it loses the device. Alone, or when the
// database does not answer, it is false: a duplicate is cheaper than a
// silence.
func (b *Broker) seenElsewhere(id string, armed time.Time) bool {
	if b.fleet == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, held, err := b.db.DeviceHolder(ctx, id)
	if err == nil && held && l.BrokerID != b.cfg.ID {
		b.log.Info("device_offline not raised: another broker holds the device", "device_id", id, "broker", l.BrokerID)
		return true
	}
	last, herr := b.db.LastPresenceEvents(ctx, []string{id})
	if err != nil || herr != nil {
		b.log.Warn("device_offline: cannot tell whether another broker saw the device; alerting", "device_id", id, "err", errors.Join(err, herr))
		return false
	}
	if e := last[id]; e != nil && e.BrokerID != b.cfg.ID && e.At.After(armed) {
		b.log.Info("device_offline not raised: another broker saw the device since it left", "device_id", id,
			"broker", e.BrokerID, "event", e.Kind, "at", e.At)
		return true
	}
	return false
}
