//go:build !linux

package connector

import (
	"context"
	"errors"
)

// netlinkWatch has no counterpart here: the network watcher polls.
type netlinkWatch struct{}

func openNetlinkWatch() (*netlinkWatch, error) { return nil, errors.ErrUnsupported }

func (*netlinkWatch) run(context.Context, chan<- netChange) error { return nil }
