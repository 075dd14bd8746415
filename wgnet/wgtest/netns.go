package wgtest

import "os"

// NetnsEnv is set, to "1", in the environment of a test binary that
// RunInNetns started.
const NetnsEnv = "FIELDPASS_TEST_IN_NETNS"

// InNetns reports whether this test binary runs in a network namespace
// RunInNetns made.
func InNetns() bool { return os.Getenv(NetnsEnv) == "1" }
