package main

import (
	"context"

	"github.com/fieldpass/fieldpass/httpapi"
	"github.com/fieldpass/fieldpass/tunnel"
)

// connSession adapts *httpapi.Conn to session.
type connSession struct{ c *httpapi.Conn }

func (s connSession) OpenStream() (tunnel.HalfCloser, error) {
	st, err := s.c.OpenStream()
	if err != nil {
		return nil, err
	}
	return st, nil
}
func (s connSession) OpenStreamEarly() (earlyStream, error) {
	st, err := s.c.OpenStreamEarly()
	if err != nil {
		return nil, err
	}
	return st, nil
}
func (s connSession) Close() error          { return s.c.Close() }
func (s connSession) Done() <-chan struct{} { return s.c.Done() }
func (s connSession) Reason() string        { return s.c.Reason() }

// connectBroker opens one recorded session to device/service through the
// broker; a refusal carries the broker's reason.
func (e *env) connectBroker(ctx context.Context, device, service string) (session, error) {
	cl, err := e.client()
	if err != nil {
		return nil, err
	}
	c, err := cl.Connect(ctx, device, service)
	if err != nil {
		return nil, err
	}
	return connSession{c}, nil
}
