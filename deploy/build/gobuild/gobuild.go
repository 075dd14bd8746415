// Package gobuild cross-compiles Fieldpass's binaries the way a release
// builds them: static (CGO_ENABLED=0), stripped, with -trimpath and the
// version stamped in, so that one commit and one version give the same bytes
// on any machine.
package gobuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/fieldpass/fieldpass"
)

// Build compiles ./cmd/<program> of the module at repo for p into out.
func Build(ctx context.Context, repo, program, version string, p fieldpass.Platform, out string) error {
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath",
		"-ldflags", "-s -w -buildid= -X github.com/fieldpass/fieldpass.Version="+version,
		"-o", out, "./cmd/"+program)
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+p.GOARCH, "GOARM="+p.GOARM, "GOMIPS="+p.GOMIPS,
		"GOFLAGS=-buildvcs=false") // the version says the release; VCS stamps would differ between a clean and a dirty tree
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s for linux/%s: %v\n%s", program, p.Name, err, strings.TrimSpace(string(b)))
	}
	return nil
}
