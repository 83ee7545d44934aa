package e2e

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// kallsymsHiddenWithoutSyslog: kallsyms_show_value() shows addresses to a
// process without CAP_SYSLOG only with kptr_restrict=0 and
// perf_event_paranoid<=1.
func kallsymsHiddenWithoutSyslog() bool {
	read := func(p string) int {
		b, _ := os.ReadFile(p)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 2
		}
		return n
	}
	return read("/proc/sys/kernel/kptr_restrict") != 0 || read("/proc/sys/kernel/perf_event_paranoid") > 1
}

// holdSocketAs starts a process of another user holding a socket, as a
// pod's non-root server is: its /proc/<pid>/fd is that user's, mode 0500.
func holdSocketAs(t *testing.T, uid uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	cmd := exec.Command("sleep", "600")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// refusedInOneLine runs the agent and fails t unless it exits 2 with one
// line that starts with prefix and holds each of want: a refusal before
// anything is loaded.
func refusedInOneLine(t *testing.T, cmd *exec.Cmd, prefix string, want ...string) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ok := len(lines) == 1 && strings.HasPrefix(lines[0], prefix)
	for _, w := range want {
		ok = ok && strings.Contains(lines[0], w)
	}
	if !ok {
		t.Errorf("want one line %q... holding %q, got:\n%s", prefix, want, out)
	}
}
