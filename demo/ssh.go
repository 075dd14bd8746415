package demo

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"syscall"
	"time"
)

// sshdPath is OpenSSH's sshd by absolute path (it re-executes itself), or
// "" when it is not installed.
func sshdPath() string {
	if p, err := exec.LookPath("sshd"); err == nil && filepath.IsAbs(p) {
		return p
	}
	for _, p := range []string{"/usr/sbin/sshd", "/usr/local/sbin/sshd"} {
		if fileExists(p) {
			return p
		}
	}
	return ""
}

// prepareSSH makes the demo's account key (once) for the current user,
// whom each device's sshd lets in with it, or notes that OpenSSH is
// missing: the demo then goes on with web UIs only.
func (r *run) prepareSSH(ctx context.Context) (string, error) {
	_, keygenErr := exec.LookPath("ssh-keygen")
	if sshdPath() == "" || keygenErr != nil {
		r.sshMissing = "OpenSSH is not installed, so the devices serve their web UI only: apt-get install openssh-server (and openssh-client for fieldpass ssh), then run the demo again"
		return "not installed: web only (apt-get install openssh-server)", nil
	}
	me, err := user.Current()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(r.cfg.Dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	key := filepath.Join(dir, "id_ed25519")
	if !fileExists(key) {
		if err := keygen(ctx, key, "fieldpass-demo"); err != nil {
			return "", err
		}
	}
	if os.Geteuid() == 0 {
		// As root, sshd confines its unprivileged half here and refuses
		// to start without it; the package makes it only at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			return "", fmt.Errorf("sshd's privilege separation directory: %w", err)
		}
	}
	r.sshUser, r.sshKey = me.Username, key
	return "user " + me.Username + ", key " + key, nil
}

func keygen(ctx context.Context, path, comment string) error {
	out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ssh-keygen: %v\n%s", err, out)
	}
	return nil
}

const sshdConfig = `# Written by the Fieldpass demo at every start: one device's sshd.
ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
AuthorizedKeysFile %s
AllowUsers %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# PAM would run the distribution's session modules, some of which
# (pam_loginuid) fail in containers.
UsePAM no
# The demo directory may sit in a group-writable tree.
StrictModes no
UseDNS no
PrintMotd no
LogLevel VERBOSE
`

// startSSHD starts the device's own sshd (host key kept in dir, so the
// broker's pinned key stays right across runs) on a free loopback port.
func (r *run) startSSHD(ctx context.Context, name, dir string) (string, error) {
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if !fileExists(hostKey) {
		if err := keygen(ctx, hostKey, name); err != nil {
			return "", err
		}
	}
	// The demo key, and the user's own keys, so that plain
	// `fieldpass ssh` works without -i too.
	pub, err := os.ReadFile(r.sshKey + ".pub")
	if err != nil {
		return "", err
	}
	keys := string(pub)
	if home, err := os.UserHomeDir(); err == nil {
		own, _ := filepath.Glob(filepath.Join(home, ".ssh", "id_*.pub"))
		for _, p := range own {
			if b, err := os.ReadFile(p); err == nil {
				keys += string(b)
			}
		}
	}
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(keys), 0o600); err != nil {
		return "", err
	}
	port, err := freePort("tcp")
	if err != nil {
		return "", err
	}
	config := filepath.Join(dir, "sshd_config")
	text := fmt.Sprintf(sshdConfig, port, hostKey, filepath.Join(dir, "sshd.pid"), authorized, r.sshUser)
	if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
		return "", err
	}
	logPath := filepath.Join(r.logs, "sshd-"+name+".log")
	mark, _ := os.Stat(logPath)
	var offset int64
	if mark != nil {
		offset = mark.Size()
	}
	p, err := startProc("sshd "+name, logPath, r.env(), nil, syscall.SIGTERM, sshdPath(), "-D", "-e", "-f", config)
	if err != nil {
		return "", err
	}
	r.add(p)
	listening := regexp.MustCompile(fmt.Sprintf(`Server listening on 127\.0\.0\.1 port %d`, port))
	if err := waitFor(p, 10*time.Second, "listening", func() bool {
		b, _ := os.ReadFile(logPath)
		return int64(len(b)) >= offset && listening.Match(b[offset:])
	}); err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", port), nil
}
