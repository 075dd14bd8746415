package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fieldpass/fieldpass"
)

// sshDomain is the pseudo-domain of "fieldpass config ssh": "ssh
// pump-7.fieldpass" reaches device pump-7. fieldpass ssh uses the same name
// as the host key alias, so both ways share one known_hosts entry per
// device.
const sshDomain = ".fieldpass"

// splitDestination splits "[user@]DEVICE" and accepts DEVICE.fieldpass.
func splitDestination(dest string) (user, device string, err error) {
	device = dest
	if i := strings.LastIndex(dest, "@"); i >= 0 {
		user, device = dest[:i], dest[i+1:]
		if user == "" {
			return "", "", fmt.Errorf("invalid destination %q: empty user name", dest)
		}
	}
	device = strings.TrimSuffix(device, sshDomain)
	if err := fieldpass.ValidateDeviceName(device); err != nil {
		return "", "", err
	}
	return user, device, nil
}

// shellQuote quotes s for the POSIX shell that ssh runs its ProxyCommand
// with, leaving plain words alone.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./+,:=@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// proxyCommand is the ProxyCommand that runs this binary's proxy. ssh
// expands %-tokens in it, so a literal % in the path is doubled; deviceArg
// is a device name or an ssh token such as %n.
func proxyCommand(exe, deviceArg string) string {
	return strings.ReplaceAll(shellQuote(exe), "%", "%%") + " proxy " + deviceArg + " ssh"
}

// viaCommand is the ProxyCommand of fieldpass ssh: the proxy joins ssh to
// the session this process opened, through the unix socket sock.
func viaCommand(exe, sock, device string) string {
	return strings.ReplaceAll(shellQuote(exe)+" proxy --socket "+shellQuote(sock), "%", "%%") + " " + device + " ssh"
}

// sshArgs is the argument list (without "ssh") that fieldpass ssh runs:
// our options first, then the destination, then the person's own
// arguments, which OpenSSH reads as further options and the remote
// command. proxy is the ProxyCommand.
func sshArgs(proxy, user, device string, extra []string) []string {
	args := []string{
		"-o", "ProxyCommand=" + proxy,
		// One known_hosts entry per device, whatever address the broker
		// has; the same name "ssh DEVICE.fieldpass" checks.
		"-o", "HostKeyAlias=" + device + sshDomain,
		"-o", "CheckHostIP=no",
	}
	dest := device
	if user != "" {
		dest = user + "@" + device
	}
	args = append(args, dest)
	return append(args, extra...)
}

// sshEnv is the environment of the ssh child: ours, with the broker and
// token the proxy must use, so they never appear on a command line where
// ps would show them.
func sshEnv(base []string, c credentials) []string {
	out := make([]string, 0, len(base)+2)
	for _, kv := range base {
		if strings.HasPrefix(kv, envBroker+"=") || strings.HasPrefix(kv, envToken+"=") {
			continue
		}
		out = append(out, kv)
	}
	return append(out, envBroker+"="+c.Broker, envToken+"="+c.Token)
}

// runSSH runs ssh with the terminal of this process and returns its exit
// status as an exitError, so that fieldpass ssh exits as ssh did.
func (e *env) runSSH(path string, args, environ []string) error {
	cmd := exec.Command(path, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = e.stdin, e.stdout, e.stderr
	cmd.Env = environ
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return exitError{code: 128 + int(ws.Signal())}
		}
		return exitError{code: ee.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("run ssh: %w", err)
	}
	return nil
}

// sshConnectionLost is ssh's exit status when its connection failed, as
// opposed to the remote command's status.
const sshConnectionLost = 255

const sshHelp = `Runs the system ssh to DEVICE through the broker: ssh's ProxyCommand is
"fieldpass proxy DEVICE ssh", and the host key is kept in known_hosts under
DEVICE.fieldpass (one entry per device). Everything after "--" goes to ssh:
options and the remote command. fieldpass exits with ssh's exit status.

The broker and token reach the proxy through the environment
(FIELDPASS_BROKER, FIELDPASS_TOKEN), never on a command line.

Examples:
  fieldpass ssh root@pump-7
  fieldpass ssh admin@pump-7 -- -L 8080:127.0.0.1:80 uptime`

// ssh takes no context: ssh handles its own signals (Ctrl-C belongs to
// the remote side), and fieldpass waits for it to exit.
func (e *env) ssh(args []string) error {
	fs := e.flagSet("ssh [user@]DEVICE [-- ssh args]", sshHelp)
	pos, err := fs.parse(args, 1, -1)
	if err != nil {
		return err
	}
	user, device, err := splitDestination(pos[0])
	if err != nil {
		return fs.fail("%s", message(err))
	}
	c, err := e.credentials()
	if err != nil {
		return err
	}
	exe, err := e.executable()
	if err != nil {
		return fmt.Errorf("find this program for ssh's ProxyCommand: %w", err)
	}
	path, err := exec.LookPath("ssh")
	if err != nil {
		return errors.New("ssh not found in PATH: install an OpenSSH client")
	}
	// The session is opened here, before ssh runs: a refusal is told once,
	// in the broker's words, and ssh never starts to add its own
	// ("kex_exchange_identification: Connection closed by remote host").
	// ssh then reaches the session through a unix socket in a directory
	// only this user can enter (ssh closes inherited descriptors).
	s, err := e.connect(context.Background(), device, "ssh")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fieldpass-ssh-")
	if err != nil {
		s.Close()
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		s.Close()
		return fmt.Errorf("listen for ssh: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	carried := make(chan error, 1)
	go func() { carried <- forwardConns(ctx, ln, s, e.stderr) }()
	err = e.runSSH(path, sshArgs(viaCommand(exe, sock, device), user, device, pos[1:]), sshEnv(os.Environ(), c))
	if ee, ok := err.(exitError); ok && ee.code == sshConnectionLost {
		// ssh lost its connection: if the broker cut the session, the
		// stream closed a moment before the session's reason arrives.
		t := time.NewTimer(endGrace)
		select {
		case <-s.Done():
		case <-t.C:
		}
		t.Stop()
	}
	cancel()
	if cut := <-carried; cut != nil {
		// The broker ended the session (grant_expired, ...): say why,
		// after whatever ssh said.
		fmt.Fprintf(e.stderr, "fieldpass: %s\n", message(cut))
	}
	return err
}

const configSSHHelp = `Prints an ~/.ssh/config block that lets plain ssh, scp, rsync and git
reach devices as DEVICE.fieldpass through this binary, using the login
saved by "fieldpass login":

  fieldpass config ssh >> ~/.ssh/config
  ssh root@pump-7.fieldpass`

func (e *env) config(args []string) error {
	return e.subcommand("config", "  fieldpass config ssh\n", args, map[string]func([]string) error{
		"ssh": func(args []string) error {
			fs := e.flagSet("config ssh", configSSHHelp)
			if _, err := fs.parse(args, 0, 0); err != nil {
				return err
			}
			exe, err := e.executable()
			if err != nil {
				return fmt.Errorf("find this program: %w", err)
			}
			fmt.Fprint(e.stdout, sshConfigBlock(exe))
			return nil
		},
	})
}

// sshConfigBlock is the ~/.ssh/config block for exe. %n is the host name
// as typed (pump-7.fieldpass); proxy drops the .fieldpass suffix, and with
// no HostName line ssh keys known_hosts by that same name.
func sshConfigBlock(exe string) string {
	return fmt.Sprintf(`# Fieldpass: "ssh [user@]DEVICE.fieldpass" reaches DEVICE through the broker.
Host *%s
    ProxyCommand %s
    CheckHostIP no
`, sshDomain, proxyCommand(exe, "%n"))
}
