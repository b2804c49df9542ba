// Command sshd starts a real OpenSSH sshd on 127.0.0.1 for bench/ssh.sh with the tests' harness
// (internal/testutil/sshd.Launch): a generated ed25519 host key, a generated client key, a
// throwaway user "amlb..." created with useradd (or, when that fails, the current user with
// PermitRootLogin prohibit-password), StrictModes no, AllowUsers, key login only, MaxSessions 50.
//
//	sshd -dir DIR
//
// DIR must not exist yet; its parent must be traversable by other users (the throwaway user's
// home is DIR/home). When sshd accepts a login, one line of JSON goes to stdout:
//
//	{"port":..., "user":"...", "group":"...", "home":"...", "key_path":"...", "host_key":"ssh-ed25519 ...", "sshd_pid":..., "note":"..."}
//
// On SIGTERM, SIGINT or SIGHUP it closes the server (Server.Close: stops sshd by PID, kills the
// processes the bench left on the host — every process of the throwaway user, found by uid; or,
// as the current user, every process whose command line names DIR — deletes the user and
// removes DIR), then exits 0.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"os/user"
	"syscall"

	"github.com/openaml/terraform-provider-aml/internal/testutil/sshd"
)

type info struct {
	Port    int    `json:"port"`
	User    string `json:"user"`
	Group   string `json:"group"`
	Home    string `json:"home"`
	KeyPath string `json:"key_path"`
	HostKey string `json:"host_key"`
	SSHDPID int    `json:"sshd_pid"`
	Note    string `json:"note,omitempty"`
}

func main() {
	dir := flag.String("dir", "", "directory for config, keys, log and the user's home (must not exist)")
	flag.Parse()
	if *dir == "" {
		fail(nil, "-dir is required")
	}
	// Signals that arrive during start-up still clean up: they wait in the channel.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)

	s, err := sshd.Launch(sshd.Options{Dir: *dir, UserPrefix: "amlb", MaxSessions: 50})
	if err != nil {
		fail(nil, "%v", err)
	}
	out := info{Port: s.Port, User: s.User, Group: group(s.User), Home: s.Home, KeyPath: s.KeyPath,
		HostKey: s.HostKey, SSHDPID: s.PID(), Note: s.Note}
	b, err := json.Marshal(out)
	if err != nil {
		fail(s, "%v", err)
	}
	fmt.Println(string(b))

	select {
	case <-sigs:
	case <-s.Exited():
		fail(s, "sshd exited unexpectedly\n%s", s.LogTail())
	}
	if err := s.Close(); err != nil {
		fmt.Fprintf(os.Stderr, "sshbench/sshd: %v\n", err)
	}
}

// fail closes s (when started), says why on stderr and exits 1.
func fail(s *sshd.Server, format string, a ...any) {
	fmt.Fprintf(os.Stderr, "sshbench/sshd: "+format+"\n", a...)
	if s != nil {
		if err := s.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "sshbench/sshd: %v\n", err)
		}
	}
	os.Exit(1)
}

// group is the name of name's primary group (its gid when it has no name), for install -g.
func group(name string) string {
	u, err := user.Lookup(name)
	if err != nil {
		return ""
	}
	if g, err := user.LookupGroupId(u.Gid); err == nil {
		return g.Name
	}
	return u.Gid
}
