//go:build !android && !ios && !windows

/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import "golang.zx2c4.com/wireguard/conn"

const (
	QueueStagedSize            = conn.IdealBatchSize
	QueueOutboundSize          = 1024
	QueueInboundSize           = 1024
	QueueHandshakeSize         = 1024
	MaxSegmentSize             = (1 << 16) - 1 // largest possible UDP datagram
	PreallocatedBuffersPerPool = 0             // Disable and allow for infinite memory growth
)

// Fieldpass: each peer's own inbound and outbound queues hold up to
// QueuePeerSize batches (each of up to a device batch of packets) rather
// than QueueInboundSize / QueueOutboundSize, which stay the device-wide
// queues' sizes. Two channels of 1024 pointers were 16 KiB per peer, idle
// or not: a third of a broker's memory per idle device at 10,000 devices.
const QueuePeerSize = 128
