// Package metrics defines the broker's Prometheus collectors. They are
// registered on a registry the caller passes in (never the global default
// one) and handed to the broker through its config, so a test can run many
// brokers in one process, each with its own numbers, and a broker started
// without metrics pays nothing: every method is a no-op on a nil *Broker.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Broker holds the broker's collectors. A nil *Broker records nothing.
type Broker struct {
	devicesOnline  prometheus.Gauge
	handshakes     *prometheus.CounterVec // result: ok, rejected, version, disabled
	reconnects     prometheus.Counter
	sessionsActive prometheus.Gauge
	sessionsOpened prometheus.Counter
	sessionsDenied *prometheus.CounterVec // reason: a fieldpass.DenyReason
	sessionsEnded  *prometheus.CounterVec // reason: a fieldpass end reason
	bytesIn        prometheus.Counter
	bytesOut       prometheus.Counter
	auditLatency   *prometheus.HistogramVec // op: the store call
	postgresErrors prometheus.Counter
	alerts         *prometheus.CounterVec // result: delivered, dropped, dead_lettered, duplicate
}

// NewBroker creates the broker's collectors and registers them on reg.
// It panics if they are registered there already (a wiring bug).
func NewBroker(reg prometheus.Registerer) *Broker {
	r := registrar{reg}
	return &Broker{
		devicesOnline: r.gauge("fieldpass_devices_online",
			"Devices with a live tunnel session to this broker."),
		handshakes: r.counterVec("fieldpass_handshakes_total",
			"Connector hellos, by result (ok: the device connected).", "result"),
		reconnects: r.counter("fieldpass_reconnects_total",
			"Devices that connected again after an earlier session with this broker process."),
		sessionsActive: r.gauge("fieldpass_sessions_active",
			"People's sessions to devices now live on this broker."),
		sessionsOpened: r.counter("fieldpass_sessions_opened_total",
			"Sessions authorised and recorded."),
		sessionsDenied: r.counterVec("fieldpass_sessions_denied_total",
			"Session requests refused, by reason (no_grant, grant_expired, device_offline, mfa_required, ...: fieldpass.DenyReasons).", "reason"),
		sessionsEnded: r.counterVec("fieldpass_sessions_ended_total",
			"Sessions ended, by end reason.", "reason"),
		bytesIn: r.counter("fieldpass_session_bytes_in_total",
			"Bytes carried from people to devices in sessions."),
		bytesOut: r.counter("fieldpass_session_bytes_out_total",
			"Bytes carried from devices to people in sessions."),
		auditLatency: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fieldpass_audit_write_seconds",
			Help: "Latency of the session manager's writes of the audit record, by call.",
			// 1 ms to 10 s: a healthy store answers in milliseconds; the
			// store timeout (5 s by default) bounds the tail.
			Buckets: prometheus.ExponentialBucketsRange(0.001, 10, 14),
		}, []string{"op"})),
		postgresErrors: r.counter("fieldpass_postgres_errors_total",
			"Broker calls to Postgres that failed."),
		alerts: r.counterVec("fieldpass_alerts_total",
			"Webhook alerts by outcome: delivered, dropped (queue full), dead_lettered (given up) or duplicate (another broker of the fleet sent it).", "result"),
	}
}

// registrar creates collectors already registered on its Registerer.
type registrar struct{ reg prometheus.Registerer }

func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	reg.MustRegister(c)
	return c
}

func (r registrar) counter(name, help string) prometheus.Counter {
	return register(r.reg, prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help}))
}

func (r registrar) gauge(name, help string) prometheus.Gauge {
	return register(r.reg, prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help}))
}

func (r registrar) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return register(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels))
}

// Handler serves the collectors of g in the Prometheus text format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

// DevicesOnline sets the number of devices with a live tunnel session.
func (m *Broker) DevicesOnline(n int) {
	if m != nil {
		m.devicesOnline.Set(float64(n))
	}
}

// Handshake counts one connector hello with its result; reconnect says the
// device had connected to this broker process before.
func (m *Broker) Handshake(result string, reconnect bool) {
	if m == nil {
		return
	}
	m.handshakes.WithLabelValues(result).Inc()
	if reconnect {
		m.reconnects.Inc()
	}
}

// SessionsActive sets the number of live sessions.
func (m *Broker) SessionsActive(n int) {
	if m != nil {
		m.sessionsActive.Set(float64(n))
	}
}

// SessionOpened counts a session authorised and recorded.
func (m *Broker) SessionOpened() {
	if m != nil {
		m.sessionsOpened.Inc()
	}
}

// SessionDenied counts a refused session request by its reason (a
// fieldpass.DenyReason, a small closed set).
func (m *Broker) SessionDenied(reason string) {
	if m != nil {
		m.sessionsDenied.WithLabelValues(reason).Inc()
	}
}

// SessionEnded counts a session ended with reason.
func (m *Broker) SessionEnded(reason string) {
	if m != nil {
		m.sessionsEnded.WithLabelValues(reason).Inc()
	}
}

// BytesIn counts n bytes carried from a person to a device.
func (m *Broker) BytesIn(n int) {
	if m != nil && n > 0 {
		m.bytesIn.Add(float64(n))
	}
}

// BytesOut counts n bytes carried from a device to a person.
func (m *Broker) BytesOut(n int) {
	if m != nil && n > 0 {
		m.bytesOut.Add(float64(n))
	}
}

// AuditWrite records how long the store call op took since start.
func (m *Broker) AuditWrite(op string, start time.Time) {
	if m != nil {
		m.auditLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

// PostgresError counts a failed call to Postgres.
func (m *Broker) PostgresError() {
	if m != nil {
		m.postgresErrors.Inc()
	}
}

// Alert counts a webhook alert's outcome: delivered, dropped,
// dead_lettered or duplicate.
func (m *Broker) Alert(result string) {
	if m != nil {
		m.alerts.WithLabelValues(result).Inc()
	}
}
