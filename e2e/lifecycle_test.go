package e2e

import (
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// Names of tcptrace's BPF programs. The kernel keeps 15 characters; cilium/ebpf
// recovers the full name from BTF where it can: both are matched.
var programNames = []string{
	"tp_sock_send_length", "tp_tcp_sendmsg_locked",
	"fexit_tcp_sendmsg", "kprobe_tcp_sendmsg", "kretprobe_tcp_sendmsg",
	"fentry_sk_stream_wait_memory", "fexit_sk_stream_wait_memory",
	"kprobe_sk_stream_wait_memory", "kretprobe_sk_stream_wait_memory",
	"tp_inet_sock_set_state", "iter_tcp_owners", "tp_consume_skb", "tp_kfree_skb", "tp_tcp_retransmit_synack",
	"fentry_tcp_conn_request", "fexit_tcp_conn_request", "kprobe_tcp_conn_request", "kretprobe_tcp_conn_request",
	"fentry_tcp_v4_syn_recv_sock", "fexit_tcp_v4_syn_recv_sock", "fentry_tcp_v6_syn_recv_sock", "fexit_tcp_v6_syn_recv_sock",
	"fexit_tcp_v4_syn_recv_sock_6args", "fexit_tcp_v6_syn_recv_sock_6args",
	"kprobe_tcp_v4_syn_recv_sock", "kretprobe_tcp_v4_syn_recv_sock", "kprobe_tcp_v6_syn_recv_sock", "kretprobe_tcp_v6_syn_recv_sock",
	"tp_timer_start", "tp_timer_expire_entry", "tp_timer_expire_exit",
	"fentry_tcp_send_delayed_ack", "fentry_tcp_delack_timer_handler", "fexit_tcp_delack_timer_handler",
	"kprobe_tcp_send_delayed_ack", "kprobe_tcp_delack_timer_handler", "kretprobe_tcp_delack_timer_handler",
	"tp_tcp_probe",
	// connection set-up and teardown (bpf/connect.bpf.c)
	"tp_tcp_retransmit_skb", "tp_tcp_retransmit_skb_err",
	"fentry_tcp_connect", "fexit_tcp_retransmit_skb", "fentry_tcp_done",
	"kprobe_tcp_connect", "kprobe_tcp_retransmit_skb", "kretprobe_tcp_retransmit_skb", "kprobe_tcp_done",
	"fexit_inet_hash_connect", "fexit_inet6_hash_connect",
	"kprobe_inet_hash_connect", "kretprobe_inet_hash_connect", "kprobe_inet6_hash_connect", "kretprobe_inet6_hash_connect",
	"fexit_inet_twsk_alloc", "kprobe_inet_twsk_alloc", "kretprobe_inet_twsk_alloc",
	"tp_paws_kfree_skb_nosk", "fentry_tcp_timewait_state_process", "kprobe_tcp_timewait_state_process",
	"tp_tcp_send_reset", "tp_tcp_send_reset_reason", "tp_tcp_receive_reset",
	// retransmit (bpf/retransmit.bpf.c; tcp_retransmit_skb's are above)
	"fentry_tcp_send_loss_probe", "fexit_tcp_send_loss_probe", "fexit_loss_probe_retransmit",
	"kprobe_tcp_send_loss_probe", "kretprobe_tcp_send_loss_probe", "kprobe_loss_probe_retransmit", "kretprobe_loss_probe_retransmit",
}

// loadedPrograms returns the IDs of loaded BPF programs named like ours.
func loadedPrograms(t testing.TB) map[ebpf.ProgramID]string {
	t.Helper()
	ours := map[string]bool{}
	for _, n := range programNames {
		ours[n] = true
		ours[n[:min(len(n), 15)]] = true
	}
	found := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, ebpf.ErrNotSupported) || err != nil && strings.Contains(err.Error(), "no such file") {
			break
		}
		if err != nil {
			t.Fatalf("listing BPF programs: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err == nil && ours[info.Name] {
			found[id] = info.Name
		}
	}
	return found
}

// After Ctrl-C, SIGTERM or --duration nothing of tcptrace stays in the
// kernel, and it exits 0 with its summary.
func TestCleanDetach(t *testing.T) {
	for _, how := range []string{"SIGINT", "SIGTERM", "duration"} {
		t.Run(how, func(t *testing.T) {
			before := loadedPrograms(t)
			var tr *tracerRun
			if how == "duration" {
				tr = startTracer(t, "--duration", "2s")
			} else {
				tr = startTracer(t)
			}
			during := loadedPrograms(t)
			var added []string
			for id, name := range during {
				if _, ok := before[id]; !ok {
					added = append(added, name)
				}
			}
			if len(added) == 0 {
				t.Fatalf("no tcptrace program loaded while tracing (before %v, during %v)", before, during)
			}
			var err error
			switch how {
			case "SIGINT":
				err = tr.stop(syscall.SIGINT)
			case "SIGTERM":
				err = tr.stop(syscall.SIGTERM)
			default:
				err = tr.wait(15 * time.Second)
			}
			if err != nil {
				t.Errorf("exit: %v\n%s", err, tr.stderrText())
			}
			// The kernel frees a program after its last reference goes, through
			// RCU: allow it a moment.
			var left []string
			for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				left = nil
				for id, name := range loadedPrograms(t) {
					if _, ok := during[id]; ok {
						if _, old := before[id]; !old {
							left = append(left, fmt.Sprintf("%d (%s)", id, name))
						}
					}
				}
				if len(left) == 0 || time.Now().After(deadline) {
					break
				}
			}
			if len(left) > 0 {
				t.Errorf("still loaded 3 s after %s: %v", how, left)
			}
			if !strings.Contains(tr.stderrText(), "Summary") || !strings.Contains(tr.stderrText(), "lost events: 0") {
				t.Errorf("no summary at exit:\n%s", tr.stderrText())
			}
			t.Logf("%s: %d programs attached (%v), none left", how, len(added), added)
		})
	}
}

// A traced process that exits ends the run, with a word about it.
func TestTracedProcessExit(t *testing.T) {
	cmd := exec.Command("sleep", "1.5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	tr := startTracer(t, "--pid", strconv.Itoa(cmd.Process.Pid))
	if err := tr.wait(15 * time.Second); err != nil {
		t.Fatalf("exit: %v\n%s", err, tr.stderrText())
	}
	if want := "traced process " + strconv.Itoa(cmd.Process.Pid) + " exited"; !strings.Contains(tr.stderrText(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, tr.stderrText())
	}
}

// Bad input: one line naming the problem, exit code 2.
func TestBadInput(t *testing.T) {
	for _, args := range [][]string{{"--pid", "999999999"}, {"--bogus"}, {"-e", "nosuch"}} {
		out, err := exec.Command(tcptraceBin, args...).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("%v: exit %v, want 2; output %q", args, err, out)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "tcptrace: ") {
			t.Errorf("%v: want one line, got %q", args, out)
		}
	}
}

// Not root: one line saying what is missing, exit code 2, nothing loaded.
func TestNotRoot(t *testing.T) {
	cmd := exec.Command(tcptraceBin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2; output %q", err, out)
	}
	if got := strings.TrimSpace(string(out)); strings.Count(got, "\n") != 0 || !regexp.MustCompile(`missing capability CAP_(BPF|SYS_ADMIN): .*as root`).MatchString(got) {
		t.Errorf("want one line naming CAP_BPF (CAP_SYS_ADMIN where there are other network namespaces) and saying to run it as root, got %q", got)
	}
}

func startSleeper(t testing.TB) int {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func itoa(n int) string { return strconv.Itoa(n) }
