package tracer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProc builds a /proc with what the checks read: kallsyms with or
// without addresses, the two sysctls, and network namespace files, where a
// hard link is the same namespace (the same inode).
func fakeProc(t *testing.T, hidden bool, netns map[string]string) procFS {
	t.Helper()
	root := t.TempDir()
	write := func(p, s string) {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	addr := "ffffffff81000000"
	if hidden {
		addr = "0000000000000000"
	}
	write("proc/kallsyms", "0000000000000000 A fixed_percpu_data\n"+addr+" T _text\n")
	write("proc/sys/kernel/kptr_restrict", "0\n")
	write("proc/sys/kernel/perf_event_paranoid", "2\n")
	// netns: path -> the path it is the same namespace as ("" for a new one).
	write("proc/self/ns/net", "")
	if err := os.Symlink(fmt.Sprintf("pid:[%d]", pidInitIno), filepath.Join(root, "proc/self/ns/pid")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"proc/1/ns/net", "proc/2/ns/net", "run/netns/a"} {
		same, ok := netns[p]
		if !ok {
			continue
		}
		if same == "" {
			write(p, "")
			continue
		}
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		if err := os.Link(filepath.Join(root, same), filepath.Join(root, p)); err != nil {
			t.Fatal(err)
		}
	}
	return procFS{root: root, bpf: func() error { return nil }, memlock: func() error { return nil }, perf: func() error { return nil }}
}

func caps(n ...int) capabilities {
	c := capabilities{last: capBPF}
	for _, b := range n {
		c.eff |= 1 << b
	}
	return c
}

func events(t *testing.T, names ...string) []EventType {
	var out []EventType
	for _, n := range names {
		e, err := ParseEventType(n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestCheckPrivileges(t *testing.T) {
	sameNS := map[string]string{"proc/1/ns/net": "proc/self/ns/net"}
	twoOther := map[string]string{"proc/1/ns/net": "", "proc/2/ns/net": "proc/1/ns/net", "run/netns/a": ""}
	all := []int{capBPF, capPerfmon, capSyslog, capSysAdmin}
	for _, tc := range []struct {
		name    string
		caps    capabilities
		hidden  bool
		netns   map[string]string
		events  []string
		pids    []uint32
		seccomp bool
		memlock bool // raising RLIMIT_MEMLOCK is refused
		perf    bool // opening a perf event is refused
		force   ProbePath
		want    string // the capability named; "seccomp"; "" for no error
	}{
		{name: "everything", caps: caps(all...), hidden: false, netns: twoOther},
		{name: "none", caps: caps(), want: "CAP_BPF"},
		{name: "none, other namespaces", caps: caps(), netns: twoOther, want: "CAP_SYS_ADMIN"},
		{name: "bpf and perfmon, other namespaces", caps: caps(capBPF, capPerfmon, capSyslog), netns: twoOther, want: "CAP_SYS_ADMIN"},
		{name: "bpf only", caps: caps(capBPF), want: "CAP_PERFMON"},
		{name: "bpf and perfmon, one namespace, addresses shown", caps: caps(capBPF, capPerfmon), netns: sameNS},
		{name: "sys_admin implies bpf and perfmon", caps: caps(capSysAdmin, capSyslog), netns: twoOther},
		{name: "kernel before 5.8: CAP_BPF unknown", caps: capabilities{eff: 1<<capBPF | 1<<capPerfmon, last: 37}, want: "CAP_BPF"},
		{name: "seccomp refuses bpf()", caps: caps(all...), seccomp: true, want: "seccomp"},
		{name: "kernel before 5.11 without CAP_SYS_RESOURCE", caps: caps(all...), memlock: true, want: "CAP_SYS_RESOURCE"},
		{name: "perf events refused, kprobes forced", caps: caps(capBPF, capPerfmon), netns: sameNS, perf: true, force: PathKprobe, want: "CAP_SYS_ADMIN"},
		{name: "perf events refused, kprobes not forced", caps: caps(capBPF, capPerfmon), netns: sameNS, perf: true},
		{name: "perf events refused, kprobes forced, CAP_SYS_ADMIN held", caps: caps(all...), perf: true, force: PathKprobe},
		{name: "addresses hidden", caps: caps(capBPF, capPerfmon), hidden: true, netns: sameNS, want: "CAP_SYSLOG"},
		{name: "addresses hidden, no event needs them", caps: caps(capBPF, capPerfmon), hidden: true, netns: sameNS, events: []string{"reset", "retransmit", "synack_retransmit"}},
		{name: "addresses hidden, delayed_ack needs them", caps: caps(capBPF, capPerfmon), hidden: true, netns: sameNS, events: []string{"reset", "delayed_ack"}, want: "CAP_SYSLOG"},
		{name: "kptr_restrict=2 hides them from CAP_SYSLOG too", caps: caps(capBPF, capPerfmon, capSyslog), hidden: true, netns: sameNS, want: "kernel.kptr_restrict to 1"},
		{name: "other namespaces", caps: caps(capBPF, capPerfmon, capSyslog), netns: twoOther, want: "CAP_SYS_ADMIN"},
		{name: "other namespaces, pid in ours", caps: caps(capBPF, capPerfmon, capSyslog), netns: map[string]string{"proc/1/ns/net": "proc/self/ns/net", "proc/2/ns/net": ""}, pids: []uint32{1}},
		{name: "other namespaces, pid in another", caps: caps(capBPF, capPerfmon, capSyslog), netns: map[string]string{"proc/1/ns/net": "proc/self/ns/net", "proc/2/ns/net": ""}, pids: []uint32{2}, want: "CAP_SYS_ADMIN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := fakeProc(t, tc.hidden, tc.netns)
			if tc.seccomp {
				fs.bpf = func() error { return unix.EPERM }
			}
			if tc.perf {
				fs.perf = func() error { return unix.EACCES }
			}
			if tc.memlock {
				fs.memlock = func() error { return fmt.Errorf("failed to set memlock rlimit: %w", unix.EPERM) }
			}
			err := checkPrivileges(tc.caps, Options{Events: events(t, tc.events...), PIDs: tc.pids, ForcePath: tc.force}, fs)
			var pe *PrivilegeError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want == "":
			case !errors.As(err, &pe):
				t.Fatalf("got %v, want a PrivilegeError", err)
			case strings.HasPrefix(tc.want, "CAP_") && pe.Capability != tc.want:
				t.Fatalf("named %q (%v), want %s", pe.Capability, err, tc.want)
			case !strings.HasPrefix(tc.want, "CAP_") && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("got %q, want it to say %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("not one line: %q", err)
			}
		})
	}
}

func TestPrivilegeErrorNamesDetectors(t *testing.T) {
	fs := fakeProc(t, true, nil)
	err := checkPrivileges(caps(capBPF, capPerfmon), Options{}, fs)
	for _, want := range []string{"missing capability CAP_SYSLOG: ", "kernel.kptr_restrict=0", "kernel.perf_event_paranoid=2", "delayed_ack", "listen_overflow", "syn_drop", "timewait_overflow"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%v: want it to say %q", err, want)
		}
	}
	for _, not := range []string{"reset", "synack_retransmit"} {
		if strings.Contains(err.Error(), not) {
			t.Errorf("%v: %s needs no address", err, not)
		}
	}
}

func TestKallsymsHidden(t *testing.T) {
	for in, want := range map[string]bool{
		"0000000000000000 A fixed_percpu_data\nffffffff81000000 T _text\n": false,
		"0000000000000000 A fixed_percpu_data\n0000000000000000 T _text\n": true,
		"0000000000000000 D x\n0000000000000000 t startup_64\n":            true,
		"":                                false,
		"ffffffffc0000000 t foo\t[mod]\n": false,
	} {
		if got := kallsymsHiddenIn(strings.NewReader(in)); got != want {
			t.Errorf("%q: hidden %v, want %v", in, got, want)
		}
	}
}

// In a PID namespace of its own tcptrace cannot find the processes the
// kernel names, and says so before anything else; in the initial one, or on
// a kernel without PID namespaces, nothing is said.
func TestCheckPrivilegesHostPIDNamespace(t *testing.T) {
	all := caps(capBPF, capPerfmon, capSyslog, capSysAdmin, capSysPtrace, capDACReadSearch)
	for _, tc := range []struct {
		name string
		link string // /proc/self/ns/pid; "" for none
		caps capabilities
		want string
	}{
		{"the host's", fmt.Sprintf("pid:[%d]", pidInitIno), all, ""},
		{"no PID namespaces", "", all, ""},
		{"a container's", "pid:[4026532713]", all, "not in the host's PID namespace (this one is pid:[4026532713])"},
		{"a container's, no capabilities either", "pid:[4026532713]", caps(), "hostPID: true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := fakeProc(t, false, nil)
			link := filepath.Join(fs.root, "proc/self/ns/pid")
			os.Remove(link)
			if tc.link != "" {
				if err := os.Symlink(tc.link, link); err != nil {
					t.Fatal(err)
				}
			}
			err := checkPrivileges(tc.caps, Options{}, fs)
			var pe *PrivilegeError
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tc.want == "":
			case !errors.As(err, &pe) || pe.Capability != "":
				t.Fatalf("got %v, want a PrivilegeError naming no capability", err)
			case !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--pid host") || strings.Contains(err.Error(), "\n"):
				t.Fatalf("got %q, want one line saying %q and --pid host", err, tc.want)
			}
		})
	}
}
