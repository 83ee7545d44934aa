package tracer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// PrivilegeError names what a run needs and lacks, found before anything is
// loaded: a root shell on a host has everything, a container has only what
// it was given, and a kernel's refusal later would not say which privilege
// was missing.
type PrivilegeError struct {
	// Capability is the missing capability ("CAP_SYS_PTRACE"), empty when
	// the capabilities are there and something else refuses (seccomp).
	Capability string
	Why        string
}

func (e *PrivilegeError) Error() string {
	if e.Capability == "" {
		return e.Why
	}
	return "missing capability " + e.Capability + ": " + e.Why
}

// Capability numbers (include/uapi/linux/capability.h).
const (
	capDACOverride   = 1
	capDACReadSearch = 2
	capSysPtrace     = 19
	capSysAdmin      = 21
	capSyslog        = 34
	capPerfmon       = 38 // 5.8+
	capBPF           = 39 // 5.8+
)

// capabilities is the effective set of this process. Root on a host has
// all of them; root in a container only those it was given: euid 0 proves
// nothing.
type capabilities struct {
	eff  uint64
	last int // /proc/sys/kernel/cap_last_cap: 37 before 5.8 (no CAP_BPF, CAP_PERFMON)
}

func ownCapabilities() (capabilities, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return capabilities{}, fmt.Errorf("reading this process's capabilities: %w", err)
	}
	c := capabilities{eff: uint64(data[0].Effective) | uint64(data[1].Effective)<<32, last: capBPF}
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
			c.last = n
		}
	}
	return c, nil
}

func (c capabilities) has(n int) bool { return n <= 63 && c.eff&(1<<n) != 0 }

// hasOrAdmin: the kernel's bpf_capable() and perfmon_capable() accept
// CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON, and kernels before 5.8
// know only CAP_SYS_ADMIN.
func (c capabilities) hasOrAdmin(n int) bool {
	return c.has(capSysAdmin) || (n <= c.last && c.has(n))
}

// CheckPrivileges finds, by trying where it can, the first privilege this
// run needs and lacks (nil if none): loading and attaching BPF programs,
// reading kernel addresses when a selected detector needs them, entering
// other network namespaces, and reading which sockets other processes hold.
// Each check is needed by what tcptrace does with the options given: a run
// limited to one process in tcptrace's own namespace needs no setns.
func CheckPrivileges(opts Options) error {
	c, err := ownCapabilities()
	if err != nil {
		return err
	}
	return checkPrivileges(c, opts, procFS{})
}

func checkPrivileges(c capabilities, opts Options, fs procFS) error {
	// First: every later check reads other processes under /proc, which
	// shows only this namespace's.
	if err := fs.hostPIDNamespace(); err != nil {
		return err
	}
	others := 0
	if !c.has(capSysAdmin) {
		others = fs.otherNetns(opts.PIDs)
	}
	// With other namespaces to enter, CAP_SYS_ADMIN is needed anyway and
	// stands for CAP_BPF and CAP_PERFMON: name it first.
	if others > 0 && (!c.hasOrAdmin(capBPF) || !c.hasOrAdmin(capPerfmon)) {
		return &PrivilegeError{"CAP_SYS_ADMIN", netnsWhy(others) + "; it also stands for CAP_BPF and CAP_PERFMON, which loading and attaching BPF programs need: run tcptrace as root (sudo), or grant it"}
	}
	if !c.hasOrAdmin(capBPF) {
		return &PrivilegeError{"CAP_BPF", "loading BPF programs and maps needs it (or CAP_SYS_ADMIN, which implies it): run tcptrace as root (sudo), or grant it"}
	}
	if !c.hasOrAdmin(capPerfmon) {
		return &PrivilegeError{"CAP_PERFMON", "attaching to tracepoints, fentry and kprobes and reading kernel memory from BPF need it (or CAP_SYS_ADMIN, which implies it): run tcptrace as root (sudo), or grant it"}
	}
	if err := fs.trySeccomp(); err != nil {
		return err
	}
	if err := fs.raiseMemlock(); err != nil {
		return err
	}
	if opts.ForcePath == PathKprobe && !c.has(capSysAdmin) && fs.perfEventsRefused() {
		return &PrivilegeError{"CAP_SYS_ADMIN", fmt.Sprintf("kprobes are perf events, and this kernel opens none to tcptrace (kernel.perf_event_paranoid=%s: at 3, Debian's kernels let only CAP_SYS_ADMIN open one)", fs.sysctl("kernel/perf_event_paranoid"))}
	}
	events := opts.Events
	if len(events) == 0 {
		events = AllEventTypes()
	}
	if names := needAddresses(attachedEvents(events)); len(names) > 0 && fs.kallsymsHidden() {
		return kallsymsError(c, names, fs)
	}
	if others > 0 {
		return &PrivilegeError{"CAP_SYS_ADMIN", netnsWhy(others)}
	}
	return fs.tryProcFDs(c, opts.PIDs)
}

func netnsWhy(n int) string {
	what := fmt.Sprintf("%d other network namespaces exist", n)
	if n == 1 {
		what = "another network namespace exists"
	}
	return what + " (containers, ip netns); tcptrace enters them (setns) to find the owners of the sockets made before it started and to read their TCP counters"
}

// needAddresses names the wanted events whose probes read kernel addresses.
func needAddresses(wanted []EventType) []string {
	var names []string
	for _, d := range detectors {
		for _, ps := range d.probes {
			if !ps.addresses {
				continue
			}
			for _, e := range ps.events {
				if containsEvent(wanted, e) {
					names = append(names, e.String())
				}
			}
		}
	}
	return names
}

// kallsymsError says why /proc/kallsyms shows no addresses.
func kallsymsError(c capabilities, names []string, fs procFS) error {
	why := fmt.Sprintf("/proc/kallsyms hides kernel addresses from tcptrace (kernel.kptr_restrict=%s, kernel.perf_event_paranoid=%s), and %s find per-CPU counters and timers by address",
		fs.sysctl("kernel/kptr_restrict"), fs.sysctl("kernel/perf_event_paranoid"), strings.Join(names, ", "))
	if c.has(capSyslog) {
		// kptr_restrict=2 hides them from everyone.
		return &PrivilegeError{"", why + ": set kernel.kptr_restrict to 1, or leave these events out (-e)"}
	}
	return &PrivilegeError{"CAP_SYSLOG", why + ": grant CAP_SYSLOG, or leave these events out (-e)"}
}

// pidInitIno is the inode number of the kernel's initial PID namespace,
// fixed at build time (PROC_PID_INIT_INO, include/linux/proc_ns.h), so that
// it reads the same on every boot and every kernel.
const pidInitIno = 0xEFFFFFFC

// hostPIDNamespace: the kernel records host pids (bpf_get_current_pid_tgid
// and the task's tgid are the initial namespace's numbers), and tcptrace
// looks each one up under /proc to name its process and find the sockets
// it holds; in a PID namespace of its own (a container without the host's)
// /proc shows none of them, or other processes under the same numbers.
func (fs procFS) hostPIDNamespace() error {
	link, err := os.Readlink(fs.path("/proc/self/ns/pid"))
	if err != nil {
		return nil // a kernel without PID namespaces: there is only the host's
	}
	ino, ok := strings.CutPrefix(link, "pid:[")
	ino, ok2 := strings.CutSuffix(ino, "]")
	n, err := strconv.ParseUint(ino, 10, 64)
	if !ok || !ok2 || err != nil || n == pidInitIno {
		return nil
	}
	return &PrivilegeError{"", fmt.Sprintf("not in the host's PID namespace (this one is %s): the kernel reports the host's pids, which /proc here does not show; run tcptrace in the host's PID namespace (hostPID: true in a pod, --pid host with podman or docker)", link)}
}

// procFS is where the checks look: the real /proc, or a test's copy.
type procFS struct {
	root string // "" for /
	// bpf, memlock and perf, when set, replace the bpf() attempt, raising
	// RLIMIT_MEMLOCK and opening a perf event (tests).
	bpf, memlock, perf func() error
}

// perfEventsRefused opens the cheapest perf event (a software dummy on this
// process): upstream, CAP_PERFMON opens any; Debian's
// kernel.perf_event_paranoid=3 (its default) refuses all of them without
// CAP_SYS_ADMIN. Tried, not read: the sysctl's 3 means that on Debian only.
func (fs procFS) perfEventsRefused() bool {
	if fs.perf != nil {
		return fs.perf() != nil
	}
	attr := unix.PerfEventAttr{Type: unix.PERF_TYPE_SOFTWARE, Config: unix.PERF_COUNT_SW_DUMMY, Size: uint32(unsafe.Sizeof(unix.PerfEventAttr{}))}
	fd, err := unix.PerfEventOpen(&attr, 0, -1, -1, unix.PERF_FLAG_FD_CLOEXEC)
	if err != nil {
		return errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM)
	}
	unix.Close(fd)
	return false
}

func (fs procFS) path(p string) string { return filepath.Join(fs.root+"/", p) }

func (fs procFS) sysctl(name string) string {
	b, err := os.ReadFile(fs.path("/proc/sys/" + name))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// trySeccomp asks bpf() for the information of no object (fd -1):
// container runtimes' default seccomp profiles refuse bpf() (EPERM) unless
// the container holds CAP_SYS_ADMIN (or CAP_BPF, in newer profiles),
// whatever its other capabilities; the kernel itself answers EBADF. A
// command that allocates nothing: before 5.11 a map's creation also says
// EPERM when RLIMIT_MEMLOCK is used up, by this or an earlier process
// whose maps are still being freed.
func (fs procFS) trySeccomp() error {
	var err error
	if fs.bpf != nil {
		err = fs.bpf()
	} else {
		attr := struct {
			fd, infoLen uint32
			info        uint64
		}{fd: ^uint32(0)}
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != 0 {
			err = errno
		}
	}
	if errors.Is(err, unix.EPERM) {
		return &PrivilegeError{"", "the bpf() system call was refused (EPERM) although tcptrace holds the capabilities it needs: a seccomp profile blocks it (container runtimes' default profiles allow bpf() only with CAP_SYS_ADMIN, or CAP_BPF in newer ones)"}
	}
	// Other failures (no BPF in this kernel) are the loader's to report.
	return nil
}

// raiseMemlock: kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (64
// KiB by default), and raising it needs CAP_SYS_RESOURCE; later ones
// charge the memory cgroup and this does nothing.
func (fs procFS) raiseMemlock() error {
	f := rlimit.RemoveMemlock
	if fs.memlock != nil {
		f = fs.memlock
	}
	err := f()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EPERM):
		return &PrivilegeError{"CAP_SYS_RESOURCE", "this kernel (before 5.11) charges BPF maps to RLIMIT_MEMLOCK, and raising it needs CAP_SYS_RESOURCE"}
	}
	return fmt.Errorf("raising RLIMIT_MEMLOCK for BPF maps (kernels before 5.11 need it): %w", err)
}

// kallsymsHidden: the kernel prints zeros for every address to a reader it
// does not trust (kallsyms_show_value: CAP_SYSLOG, unless kptr_restrict=0
// and perf_event_paranoid<=1). Per-CPU symbols are zero-based on x86-64, so
// the first text symbol decides.
func (fs procFS) kallsymsHidden() bool {
	f, err := os.Open(fs.path("/proc/kallsyms"))
	if err != nil {
		return false // the loader says what is missing
	}
	defer f.Close()
	return kallsymsHiddenIn(f)
}

func kallsymsHiddenIn(r io.Reader) bool {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		addr, rest, ok := bytes.Cut(sc.Bytes(), []byte(" "))
		if !ok || len(rest) < 2 || (rest[0] != 'T' && rest[0] != 't') {
			continue
		}
		return len(bytes.TrimLeft(addr, "0")) == 0
	}
	return false
}

// otherNetns counts the network namespaces tcptrace would enter: those of
// the given processes, or every one on the host, but its own.
func (fs procFS) otherNetns(pids []uint32) int {
	var own unix.Stat_t
	if unix.Stat(fs.path("/proc/self/ns/net"), &own) != nil {
		return 0
	}
	seen := map[uint64]bool{own.Ino: true}
	count := func(p string) {
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && !seen[st.Ino] {
			seen[st.Ino] = true
		}
	}
	if len(pids) > 0 {
		for _, pid := range pids {
			count(fs.path(fmt.Sprintf("/proc/%d/ns/net", pid)))
		}
	} else {
		for _, p := range fs.pids() {
			count(fs.path("/proc/" + p + "/ns/net"))
		}
		mounts, _ := os.ReadDir(fs.path("/run/netns"))
		for _, m := range mounts {
			count(fs.path("/run/netns/" + m.Name()))
		}
	}
	return len(seen) - 1
}

func (fs procFS) pids() []string {
	entries, _ := os.ReadDir(fs.path("/proc"))
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, e.Name())
		}
	}
	return out
}

// tryProcFDs reads one descriptor of every process in scope, as the owner
// scan will: listing /proc/<pid>/fd is a permission check on a directory of
// mode 0500 owned by the process's user (CAP_DAC_READ_SEARCH for another
// user's), and reading a link is a ptrace access check
// (proc_fd_access_allowed: CAP_SYS_PTRACE for a process with capabilities
// tcptrace lacks, such as root's on the host). A refusal names the
// capability only when tcptrace lacks it: with it, something else refused
// (a process in a user namespace above tcptrace's, an LSM), and the owner
// scan counts what it could not read.
func (fs procFS) tryProcFDs(c capabilities, pids []uint32) error {
	if c.has(capSysPtrace) && (c.has(capDACReadSearch) || c.has(capDACOverride)) {
		return nil // nothing it could name: root's case, no walk of /proc
	}
	self := strconv.Itoa(os.Getpid())
	var dirs []string
	if len(pids) > 0 {
		for _, p := range pids {
			dirs = append(dirs, strconv.Itoa(int(p)))
		}
	} else {
		dirs = fs.pids()
	}
	for _, d := range dirs {
		if d == self {
			continue
		}
		dir := fs.path("/proc/" + d + "/fd")
		f, err := os.Open(dir)
		if err == nil {
			var names []string
			names, err = f.Readdirnames(1)
			f.Close()
			if err == nil && len(names) == 1 {
				if _, err = os.Readlink(dir + "/" + names[0]); errors.Is(err, os.ErrPermission) && !c.has(capSysPtrace) {
					return &PrivilegeError{"CAP_SYS_PTRACE", fmt.Sprintf("reading which sockets process %s (%s) holds was refused (readlink %s/%s: %v); tcptrace reads them to name the owners of sockets made before it started",
						d, fs.comm(d), dir, names[0], unix.EACCES)}
				}
				continue
			}
		}
		if errors.Is(err, os.ErrPermission) && !c.has(capDACReadSearch) && !c.has(capDACOverride) {
			var st unix.Stat_t
			unix.Stat(dir, &st)
			return &PrivilegeError{"CAP_DAC_READ_SEARCH", fmt.Sprintf("listing %s (process %s, %s, of uid %d) was refused; tcptrace reads it to name the owners of sockets made before it started", dir, d, fs.comm(d), st.Uid)}
		}
		// Gone, a kernel thread, or no descriptors: nothing to learn.
	}
	return nil
}

func (fs procFS) comm(pid string) string {
	b, _ := os.ReadFile(fs.path("/proc/" + pid + "/comm"))
	return strings.TrimSpace(string(b))
}
