//go:build linux

package e2e_test

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// socket is one socket a process holds, as /proc shows it.
type socket struct {
	fd     int
	inode  uint64
	proto  string // tcp, tcp6, udp, udp6, unix, netlink, raw, raw6, packet, or "?" if in no table
	local  netip.AddrPort
	remote netip.AddrPort
	state  string // for tcp: LISTEN, ESTABLISHED, ...; for udp: UNCONN or ESTABLISHED
}

// tcpStates names the st column of /proc/net/tcp (include/net/tcp_states.h).
var tcpStates = map[string]string{
	"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1", "05": "FIN_WAIT2",
	"06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}

// processSockets lists the sockets pid holds: the socket:[inode] links in
// /proc/PID/fd, matched with the inode columns of the socket tables in the
// process's network namespace (/proc/PID/net/...).
func processSockets(pid int) ([]socket, error) {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(fdDir)
	if err != nil {
		return nil, err
	}
	var socks []socket
	for _, e := range ents {
		link, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		ino, ok := strings.CutPrefix(link, "socket:[")
		if !ok {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		n, err := strconv.ParseUint(strings.TrimSuffix(ino, "]"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("fd %d: odd link %q", fd, link)
		}
		socks = append(socks, socket{fd: fd, inode: n, proto: "?"})
	}
	sort.Slice(socks, func(i, j int) bool { return socks[i].fd < socks[j].fd })

	byInode := map[uint64]*socket{}
	for i := range socks {
		byInode[socks[i].inode] = &socks[i]
	}
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		if err := readInetTable(fmt.Sprintf("/proc/%d/net/%s", pid, proto), proto, byInode); err != nil {
			return nil, err
		}
	}
	// The other kinds are only named, so that the table shows every socket.
	for proto, col := range map[string]int{"unix": 6, "netlink": 9, "raw": 9, "raw6": 9, "packet": 8} {
		readInodeColumn(fmt.Sprintf("/proc/%d/net/%s", pid, proto), proto, col, byInode)
	}
	return socks, nil
}

func readInetTable(path, proto string, byInode map[uint64]*socket) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil // no IPv6 in this kernel
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
		fs := strings.Fields(sc.Text())
		if len(fs) < 10 {
			continue
		}
		ino, err := strconv.ParseUint(fs[9], 10, 64)
		if err != nil {
			return fmt.Errorf("%s: bad inode in %q", path, sc.Text())
		}
		s := byInode[ino]
		if s == nil {
			continue
		}
		s.proto = proto
		if s.local, err = parseProcAddr(fs[1]); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if s.remote, err = parseProcAddr(fs[2]); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		switch {
		case strings.HasPrefix(proto, "tcp"):
			s.state = tcpStates[fs[3]]
		case fs[3] == "01":
			s.state = "ESTABLISHED" // a connected UDP socket
		default:
			s.state = "UNCONN"
		}
	}
	return sc.Err()
}

func readInodeColumn(path, proto string, col int, byInode map[uint64]*socket) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		fs := strings.Fields(line)
		if len(fs) <= col {
			continue
		}
		if ino, err := strconv.ParseUint(fs[col], 10, 64); err == nil && byInode[ino] != nil {
			byInode[ino].proto = proto
		}
	}
}

// parseProcAddr parses "0100007F:1F90": the address as the kernel's
// 32-bit words in host (little-endian here) order, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(port)), nil
}

func formatSockets(socks []socket) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FD\tINODE\tPROTO\tLOCAL\tREMOTE\tSTATE")
	for _, s := range socks {
		local, remote := "-", "-"
		if s.local.IsValid() {
			local, remote = s.local.String(), s.remote.String()
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", s.fd, s.inode, s.proto, local, remote, orDash(s.state))
	}
	tw.Flush()
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
