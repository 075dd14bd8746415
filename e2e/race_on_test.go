//go:build linux && race

package e2e_test

// raceBuild: go test -race builds the binaries under test with -race too,
// and a process that reports a data race fails its test.
const raceBuild = true
