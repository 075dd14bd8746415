//go:build enroll_https

package main

import (
	"context"

	"github.com/fieldpass/fieldpass/cmd/internal/capool"
	"github.com/fieldpass/fieldpass/connector"
	"github.com/fieldpass/fieldpass/connector/httpsenroll"
)

// A connector built with -tags enroll_https also enrols over HTTPS
// (enroll --broker URL), as connectors before v0.5 did, at the cost of
// crypto/tls and crypto/x509 in the binary. Tests that drive many
// connectors through the broker's HTTPS API build it so.
func init() {
	enrollHTTPS = func(ctx context.Context, brokerURL, caFile, token, stateDir string) (*connector.State, error) {
		roots, err := capool.Load(caFile)
		if err != nil {
			return nil, usageError{Msg: "--ca-file: " + err.Error()}
		}
		return httpsenroll.Enroll(ctx, httpsenroll.Config{BrokerURL: brokerURL, Token: token, StateDir: stateDir, RootCAs: roots})
	}
}
