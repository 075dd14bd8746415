//go:build !linux

package wgnet

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

var errKernelLinuxOnly = errors.New("a kernel TUN device is supported on Linux only")

// NewKernel fails: the kernel TUN mode is Linux's.
func NewKernel(KernelConfig) (*KernelDevice, error) {
	return nil, errKernelLinuxOnly
}

func listenTCPOn(string, netip.AddrPort) (net.Listener, error) { return nil, errKernelLinuxOnly }

func dialTCPOn(context.Context, string, netip.Addr, netip.AddrPort, *portSet) (net.Conn, uint16, error) {
	return nil, 0, errKernelLinuxOnly
}

func tuneConn(net.Conn) {}
