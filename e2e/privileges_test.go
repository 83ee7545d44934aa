package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const dropCapsEnv = "TCPTRACE_E2E_DROP_CAPS"

func init() { connHelpers["capexec"] = capExec }

// capExec runs tcptrace (the arguments after the helper's own) without the
// capabilities numbered in $TCPTRACE_E2E_DROP_CAPS: dropped from the
// bounding set, root's exec gives it every other one, as a container
// runtime does with the capabilities it was told to add.
func capExec(time.Duration) error {
	runtime.LockOSThread() // capabilities are per thread: drop and exec on this one
	for _, f := range strings.Split(os.Getenv(dropCapsEnv), ",") {
		c, err := strconv.Atoi(f)
		if err != nil {
			return err
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("dropping capability %d: %w", c, err)
		}
	}
	unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
	args := strings.Split(os.Getenv("TCPTRACE_E2E_ARGS"), "\x1f")
	return unix.Exec(tcptraceBinFromEnv(), append([]string{"tcptrace"}, args...), os.Environ())
}

func tcptraceBinFromEnv() string { return os.Getenv("TCPTRACE_E2E_TCPTRACE") }

// runWithout runs tcptrace without the given capabilities and returns its
// exit code and output.
func runWithout(t *testing.T, caps []int, args ...string) (int, string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if forcePath != "" {
		args = append(args, "--force-path", forcePath)
	}
	var nums []string
	for _, c := range caps {
		nums = append(nums, strconv.Itoa(c))
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"=capexec", dropCapsEnv+"="+strings.Join(nums, ","),
		"TCPTRACE_E2E_ARGS="+strings.Join(args, "\x1f"), "TCPTRACE_E2E_TCPTRACE="+tcptraceBin)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("running tcptrace without capabilities %v: %v", caps, err)
	return 0, ""
}

// Capability numbers (include/uapi/linux/capability.h).
const (
	capDACOverride   = 1
	capDACReadSearch = 2
	capSysPtrace     = 19
	capSysAdmin      = 21
	capSysResource   = 24
	capSyslog        = 34
	capPerfmon       = 38
	capBPF           = 39
)

// Whatever a run needs and lacks is named before anything is loaded, in
// one line, exit 2, on every kernel: each case takes away what one check
// is for and makes what it guards exist (another network namespace, a
// process of another user holding a socket, a process with more
// capabilities than tcptrace).
func TestPrivilegesNamed(t *testing.T) {
	newNetns(t) // another network namespace to enter
	holdSocketAs(t, 65534)
	mine := startSleeper(t) // a process in tcptrace's own namespace
	for _, c := range []struct {
		name string
		drop []int
		args []string
		want string // the capability named; "" for a run that works
	}{
		{"CAP_SYS_ADMIN, with other namespaces", []int{capSysAdmin}, nil, "CAP_SYS_ADMIN"},
		{"CAP_SYS_ADMIN and CAP_BPF, with other namespaces", []int{capSysAdmin, capBPF}, nil, "CAP_SYS_ADMIN"},
		{"CAP_SYS_ADMIN and CAP_BPF, one process of this namespace", []int{capSysAdmin, capBPF}, []string{"--pid", strconv.Itoa(mine)}, "CAP_BPF"},
		{"CAP_SYS_ADMIN and CAP_PERFMON, one process of this namespace", []int{capSysAdmin, capPerfmon}, []string{"--pid", strconv.Itoa(mine)}, "CAP_PERFMON"},
		{"CAP_SYS_ADMIN, one process of this namespace", []int{capSysAdmin}, []string{"--pid", strconv.Itoa(mine), "-d", "1"}, map[bool]string{true: "CAP_SYS_ADMIN"}[kprobesNeedAdmin()]},
		{"CAP_SYSLOG", []int{capSyslog}, nil, map[bool]string{true: "CAP_SYSLOG"}[kallsymsHiddenWithoutSyslog()]},
		{"CAP_SYSLOG, events that need no address", []int{capSyslog}, []string{"-e", "reset,retransmit", "-d", "1"}, ""},
		{"CAP_SYS_PTRACE", []int{capSysPtrace}, nil, "CAP_SYS_PTRACE"},
		{"CAP_DAC_READ_SEARCH and CAP_DAC_OVERRIDE", []int{capDACReadSearch, capDACOverride}, nil, "CAP_DAC_READ_SEARCH"},
		{"CAP_SYS_RESOURCE", []int{capSysResource}, []string{"-e", "reset,retransmit", "-d", "1"}, map[bool]string{true: "CAP_SYS_RESOURCE"}[memlockCharged(t)]},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := c.args
			if len(args) == 0 || args[len(args)-1] != "1" {
				args = append(args, "-d", "1")
			}
			code, out := runWithout(t, c.drop, args...)
			if c.want == "" {
				if code != 0 {
					t.Fatalf("exit %d, want 0:\n%s", code, out)
				}
				// Nothing it was not given was tried: no namespace
				// entered in vain.
				if strings.Contains(out, "operation not permitted") {
					t.Errorf("a refusal in a run that needs nothing more:\n%s", out)
				}
				return
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "tcptrace: missing capability "+c.want+": ") {
				t.Fatalf("exit %d, want 2 and one line naming %s:\n%s", code, c.want, out)
			}
		})
	}
}

// kprobesNeedAdmin: on the kprobe path, a kernel whose
// perf_event_paranoid is 3 (Debian's default, and the matrix's kernels are
// Debian's) opens perf events, and so kprobes, to CAP_SYS_ADMIN only.
// tcptrace itself finds it by trying; upstream kernels treat 3 as 2.
func kprobesNeedAdmin() bool {
	b, _ := os.ReadFile("/proc/sys/kernel/perf_event_paranoid")
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return forcePath == "kprobe" && n >= 3
}

// memlockCharged: kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK
// (memory cgroup accounting replaced it in 5.11).
func memlockCharged(t *testing.T) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	return major < 5 || major == 5 && minor < 11
}
