package broker

// An admin's end of a session, wherever it lives in the fleet. The admin's
// request may reach any broker; the session is live at the broker that
// holds its device and recorded it (the row's broker_id), and possibly
// relayed by a third that served the person. The end is carried to the
// holder over brokerlink, which cuts the streams at once and records the
// end with its own byte counts, before the admin is answered.
//
// brokerlink rather than a Postgres NOTIFY the holder listens to: an end
// is a request that wants an answer (did the holder have it, what did it
// record), and the row already names the one broker to ask; a NOTIFY
// would wake every broker of the fleet and tell the asker nothing. When
// the holder cannot be asked (it is gone, or the link does not answer),
// the end is written to the row, and a live holder follows it within its
// CheckInterval (enforce.go).

import (
	"context"

	"github.com/fieldpass/fieldpass"
	"github.com/fieldpass/fieldpass/brokerlink"
)

// EndHeld ends the session id live here with reason and records the end
// (with the real byte counts) before it returns the ended row; a session
// not live here is not_found. Another broker asks it over brokerlink
// (brokerlink.Ender) for an admin whose request reached that broker.
func (m *Sessions) EndHeld(ctx context.Context, id string, reason fieldpass.EndReason) (*fieldpass.Session, error) {
	if err := fieldpass.ValidateEndReason(reason); err != nil {
		return nil, err
	}
	m.mu.Lock()
	s := m.live[id]
	m.mu.Unlock()
	if s == nil || s.remote != nil {
		return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "session %s is not live on broker %s", id, m.brokerID)
	}
	m.end(s, reason, false)
	// Written here rather than by a goroutine, so that the answer is the
	// recorded end; an end that lost the race to another reason is that
	// one's write, waited for under writeMu.
	if !m.writeOne(ctx, s) {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE,
			"session %s was cut on broker %s, but its end is not recorded yet (the database does not answer); it is retried", id, m.brokerID)
	}
	return m.db.Session(ctx, id)
}

var _ brokerlink.Ender = (*Sessions)(nil)

// EndSessionAnywhere ends rec, an open session of the fleet, with reason
// (an admin's end): here if it is live here, else at the broker that holds
// it, over brokerlink. It returns the row as the end was recorded; handled
// is false when neither could end it (the session is not live anywhere a
// link reaches: its broker is gone or unreachable), and the caller
// records the end itself.
func (m *Sessions) EndSessionAnywhere(ctx context.Context, rec *fieldpass.Session, reason fieldpass.EndReason) (out *fieldpass.Session, handled bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.StoreTimeout)
	defer cancel()
	if rec.BrokerID == m.brokerID {
		out, err = m.EndHeld(ctx, rec.ID, reason)
		if fieldpass.ErrorCode(err) == fieldpass.ENOTFOUND {
			return nil, false, nil // left open by an earlier run, say
		}
		return out, err == nil || fieldpass.ErrorCode(err) == fieldpass.EUNAVAILABLE, err
	}
	link, err := m.linkToBroker(ctx, rec.BrokerID)
	if err != nil {
		m.log.Warn("end a session at its broker: no link; ending it in the database", "session", rec.ID, "broker", rec.BrokerID, "err", err)
		return nil, false, nil
	}
	out, err = link.End(ctx, rec.ID, reason)
	if err != nil {
		// Not live there (a crash's leftover), the link broke, or its
		// database does not answer: the row decides, and a holder that
		// still has it follows the row within its CheckInterval.
		m.log.Warn("end a session at its broker: not ended there; ending it in the database", "session", rec.ID, "broker", rec.BrokerID, "err", err)
		return nil, false, nil
	}
	m.log.Info("session ended at its broker", "session", rec.ID, "broker", rec.BrokerID, "reason", out.EndReason)
	return out, true, nil
}

// linkToBroker returns the link to the broker of the fleet with id, as
// the broker roll has its address.
func (b *Broker) linkToBroker(ctx context.Context, id string) (*brokerlink.Link, error) {
	if b.fleet == nil {
		return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "this broker is not part of a fleet")
	}
	brokers, err := b.db.Brokers(ctx)
	if err != nil {
		return nil, err
	}
	for _, br := range brokers {
		if br.ID != id {
			continue
		}
		if !br.Stopped.IsZero() || br.PeerAddr == "" {
			return nil, fieldpass.Errorf(fieldpass.EUNAVAILABLE, "broker %s has stopped", id)
		}
		return b.fleet.cfg.Links.Link(ctx, br.PeerAddr)
	}
	return nil, fieldpass.Errorf(fieldpass.ENOTFOUND, "no broker %s in the roll", id)
}
