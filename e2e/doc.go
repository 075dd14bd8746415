// Package e2e runs the real Fieldpass binaries end to end: TestMain builds
// fieldpass-broker, fieldpass-connector and fieldpass once per run, and each
// test starts its own broker process on free loopback ports against its own
// Postgres database (postgres/pgtest), enrols connector processes with the
// CLI, and asserts what an operator would see: `device list --json`, exit
// codes, one-line error messages, the sockets a connector holds.
//
// The tests read as the scenario they check:
//
//	start broker -> create token -> enrol -> run connector -> assert
//
// Outside the field network (below), everything listens and sends on
// 127.0.0.1 only. Every process is killed
// when its test ends, passed or not, and its log (debug level) is printed
// when the test failed, or always with FIELDPASS_E2E_LOGS=1 in go test's
// environment. Under go test -race the binaries are built with -race too, and
// a process that reports a data race fails its test.
//
// TestAccess is the product's promise with real parts: an OpenID provider
// (mockoidc) in the test process that the broker logs people in through, a
// vendor logging in with `fieldpass login` and a browser of the test's own,
// OpenSSH's sshd on a loopback port with its own host key and config behind
// the connector, and the ssh client through `fieldpass ssh` and `fieldpass
// forward`. It checks deny without a grant, a command within one, the cut at
// expiry and at revocation (within a second, timings logged), the session
// rows and audit events an auditor reads (byte counts held against a
// counting relay in front of sshd), and `audit verify` before and after a
// superuser rewrites an event. It is skipped where OpenSSH is not installed.
//
// The TestField* tests run in a field network of their own (fieldnet_test.go),
// built with ip netns and veth as root: an "internet" namespace holding the
// broker (HTTPS with a certificate from the test's own CA, which the CLI and
// connectors trust through SSL_CERT_FILE; Postgres reached through a link
// the test can cut), a carrier namespace doing NAT (nftables masquerade,
// random ports) for a private APN bridge and forwarding nothing inbound,
// device namespaces on the APN each running a connector, sshd, a web
// interface and an echo service on all of their addresses, and an engineer
// namespace where the CLI and ssh run. Network conditions are nftables rules
// in the carrier (loss, blackout) and a UDP delay relay of the test's own
// (this kernel has no netem); roaming is a new APN address plus a flush of
// the carrier's conntrack table. Nothing is added to the root namespace, and
// every namespace is deleted when its test ends; namespaces left by a killed
// run are removed by the next. Where namespaces cannot be created (not root,
// no iproute2) these tests skip, saying why; nftables and conntrack missing
// is a failure (.ci/run installs them).
//
// TestDeployFiles checks deploy/ offline: systemd units, Kubernetes
// manifests, Dockerfiles, the example connector config, and every flag they
// pass against the binaries' own -h. TestDemo runs deploy/demo/demo.sh and
// stops it with SIGINT; -short skips it.
//
// The package holds tests only; this file is its documentation.
package e2e
