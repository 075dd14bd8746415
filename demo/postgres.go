package demo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// pgBinaries finds initdb and postgres the way postgres/pgtest does: on
// PATH, else the newest /usr/lib/postgresql/*/bin.
func pgBinaries() (initdb, postgres string, err error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(dirs, func(i, j int) bool {
			a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
			b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
			return a > b
		})
		for _, d := range dirs {
			if p := filepath.Join(d, name); fileExists(p) {
				return p
			}
		}
		return ""
	}
	initdb, postgres = find("initdb"), find("postgres")
	if initdb == "" || postgres == "" {
		return "", "", errors.New("the PostgreSQL server binaries (initdb, postgres) are not installed: apt-get install postgresql (Debian, Ubuntu), dnf install postgresql-server (Fedora) or brew install postgresql; or put their directory, e.g. /usr/lib/postgresql/15/bin, on PATH")
	}
	return initdb, postgres, nil
}

// pgUser is who runs the cluster: ourselves, unless we are root, which
// initdb refuses; then the postgres user, or nobody (as pgtest does).
func pgUser() (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 == nil && err2 == nil {
			return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, name, nil
		}
	}
	return nil, "", errors.New(`running as root, and initdb refuses root: create a "postgres" user (useradd --system postgres) to run the demo's cluster as`)
}

// reachable checks that a user other than root can get to dir: every
// directory above it must be searchable by others.
func reachable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("%s is not searchable by other users (chmod o+x %s), so Postgres, which cannot run as root, cannot reach its data under it: choose another --dir", d, d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// stopStalePostmaster stops a postmaster left running on dataDir by a demo
// that was killed outright, so this run can start its own.
func stopStalePostmaster(dataDir string, grace time.Duration) error {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return nil
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return nil
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("postgres")) {
		return nil // gone; postgres removes a stale lock file itself
	}
	syscall.Kill(pid, syscall.SIGINT) // fast shutdown
	for deadline := time.Now().Add(grace); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
	}
	return fmt.Errorf("a Postgres (pid %d) from an earlier demo still runs on %s and did not stop", pid, dataDir)
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
