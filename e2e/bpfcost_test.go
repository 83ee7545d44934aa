package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// BenchmarkBPFCost measures what tcptrace's programs cost the kernel per run,
// with the kernel's own accounting (kernel.bpf_stats_enabled): run_time_ns /
// run_cnt of each program, beside an empty program attached to the same
// tracepoint in the same run (the floor) and beside a bpftrace script doing
// the same filtering (bpftrace attaches classic tracepoints: their cost of
// building the trace record before the program runs is not in run_time_ns). The loads: a small-message
// request/response loop (every send runs the send hooks; none fails), a bulk
// sender (128 KB writes: every segment and ACK runs tcp_probe), a
// sender spinning on EAGAIN (the detector's own path), and connection churn
// (every SYN, state change and freed skb runs the listener hooks). It reports; it
// asserts nothing about time.
func BenchmarkBPFCost(b *testing.B) {
	restore := enableBPFStats(b)
	defer restore()

	floors := map[string]*ebpf.Program{}
	for _, tp := range []string{"sock_send_length", "tcp_sendmsg_locked", "consume_skb", "kfree_skb", "inet_sock_set_state",
		"timer_start", "timer_expire_entry", "timer_expire_exit", "tcp_probe"} {
		prog, l := emptyTwin(b, twinTracepoint, tp)
		defer prog.Close()
		defer l.Close()
		floors[tp] = prog
	}
	bt := startBpftrace(b)
	before := loadedPrograms(b)
	// TCPTRACE_BENCH_ARGS (space-separated) runs tcptrace with those
	// arguments, to measure a detector's share of a shared hook.
	tr := startTracer(b, strings.Fields(os.Getenv("TCPTRACE_BENCH_ARGS"))...)
	ours := map[ebpf.ProgramID]string{}
	for id, name := range loadedPrograms(b) {
		if _, ok := before[id]; !ok {
			ours[id] = name
		}
	}
	ns := newNetns(b)

	progs := map[string]*ebpf.Program{}
	for tp, p := range floors {
		progs["(empty) tp_btf/"+tp] = p
	}
	for id, name := range ours {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			b.Fatalf("program %s: %v", name, err)
		}
		defer p.Close()
		progs[name] = p
	}
	for name, p := range bt {
		progs["(bpftrace) "+name] = p
	}
	var rows, loads []string
	for _, load := range []struct {
		mode string
		d    time.Duration
	}{{"pingpong", 3 * time.Second}, {"bulk", 3 * time.Second}, {"spin", 2 * time.Second}, {"churn", 3 * time.Second}} {
		before := map[string]*ebpf.ProgramStats{}
		for name, p := range progs {
			before[name] = progStats(b, p)
		}
		h := startHelper(b, ns, load.mode, load.d)
		res := h.run()
		var lines []string
		for name, p := range progs {
			after := progStats(b, p)
			runs := after.RunCount - before[name].RunCount
			if runs == 0 {
				continue
			}
			perRun := float64(after.Runtime-before[name].Runtime) / float64(runs)
			lines = append(lines, fmt.Sprintf("| %s | `%s` | %d | %.0f |", load.mode, name, runs, perRun))
			b.ReportMetric(perRun, "ns/run-"+load.mode+"-"+strings.NewReplacer("/", "_", " ", "", "(", "", ")", "-").Replace(name))
		}
		sort.Strings(lines)
		rows = append(rows, lines...)
		loads = append(loads, fmt.Sprintf("%s: %v", load.mode, res))
	}
	tr.stop(syscall.SIGINT)
	benchReport(b, "BPF cost per program run (kernel.bpf_stats_enabled)",
		"Loads: "+strings.Join(loads, "; ")+"\n\n| load | program | runs | ns per run |\n|---|---|---|---|\n"+strings.Join(rows, "\n"))
}

// bpftraceScript does what tcptrace's hot-path programs do, the way one
// would write it in bpftrace: the same tests on the same tracepoints, and a
// count per socket where tcptrace aggregates. $1 and $2 bound
// tcp_rcv_state_process, as tcptrace's consume_skb filter does (as signed
// numbers: bpftrace's positional parameters are int64; kernel addresses keep
// their order). $3 is tcp_delack_timer and $4 tw_timer_handler, as
// tcptrace's timer filter. The state-change filter lets through what one of
// tcptrace's detectors looks at: listen (10), connect (SYN_SENT, 2) and its
// end, every close (7) for the TIME_WAIT check.
const bpftraceScript = `
BEGIN { @holders = 0; }
tracepoint:sock:sock_send_length {
	if (args->ret == -11) { @eagain[args->sk] = count(); }
	else if (args->ret > 0 && args->protocol == 6 &&
		((struct tcp_sock *)args->sk)->write_seq != ((struct tcp_sock *)args->sk)->snd_nxt) { @unsent = count(); }
}
tracepoint:tcp:tcp_sendmsg_locked /args->skb_len >= args->size_goal/ { @pass = count(); }
tracepoint:skb:consume_skb /(int64)args->location >= $1 && (int64)args->location < $2/ { @syn = count(); }
tracepoint:skb:kfree_skb /args->reason == 40/ { @overflow = count(); }
tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->newstate == 10 || args->oldstate == 10 || args->newstate == 2 || args->oldstate == 2 || args->newstate == 7)/ { @state[args->newstate] = count(); }
tracepoint:timer:timer_start /(int64)args->function == $3 || (int64)args->function == $4/ { @armed[args->timer] = nsecs; }
tracepoint:timer:timer_expire_entry /(int64)args->function == $3/ { @firing[cpu] = (uint64)args->timer; }
tracepoint:timer:timer_expire_exit /@firing[cpu] == (uint64)args->timer/ { delete(@firing[cpu]); @fired = count(); }
tracepoint:tcp:tcp_probe /@holders > 0/ { @release = count(); }
`

// bpftracePrograms is how many programs the script attaches.
const bpftracePrograms = 9

// bpftraceCommand is the comparison script with its addresses.
func bpftraceCommand(b *testing.B) *exec.Cmd {
	start, end := kallsymsRange(b, "tcp_rcv_state_process")
	delack, _ := kallsymsRange(b, "tcp_delack_timer")
	tw, _ := kallsymsRange(b, "tw_timer_handler")
	return exec.Command("bpftrace", "-e", bpftraceScript, "--", strconv.FormatInt(int64(start), 10), strconv.FormatInt(int64(end), 10),
		strconv.FormatInt(int64(delack), 10), strconv.FormatInt(int64(tw), 10))
}

// startBpftrace runs the comparison script if bpftrace is installed (make
// bench installs it) and returns its programs by the hook they sit on.
func startBpftrace(b *testing.B) map[string]*ebpf.Program {
	if _, err := exec.LookPath("bpftrace"); err != nil {
		b.Logf("bpftrace not installed: no comparison (make bench installs it)")
		return nil
	}
	before := allPrograms(b)
	cmd := bpftraceCommand(b)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Attaching") {
			break
		}
		if !strings.Contains(sc.Text(), "RLIMIT_MEMLOCK") { // harmless on 5.11+
			b.Logf("bpftrace: %s", sc.Text())
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	progs := map[string]*ebpf.Program{}
	for deadline := time.Now().Add(10 * time.Second); len(progs) < bpftracePrograms && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for id, name := range allPrograms(b) {
			if _, old := before[id]; old {
				continue
			}
			if p, err := ebpf.NewProgramFromID(id); err == nil {
				if _, dup := progs[name]; dup {
					p.Close()
					continue
				}
				b.Cleanup(func() { p.Close() })
				progs[name] = p
			}
		}
	}
	if len(progs) < bpftracePrograms {
		b.Logf("bpftrace attached %d of its %d programs: %v", len(progs), bpftracePrograms, progs)
	}
	return progs
}

func allPrograms(b *testing.B) map[ebpf.ProgramID]string {
	found := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return found
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil {
			found[id] = info.Name
		}
		p.Close()
	}
}

func kallsymsRange(b *testing.B, name string) (uint64, uint64) {
	data, err := os.ReadFile("/proc/kallsyms")
	if err != nil {
		b.Fatal(err)
	}
	var addrs []uint64
	var start uint64
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || (f[1] != "t" && f[1] != "T") {
			continue
		}
		a, _ := strconv.ParseUint(f[0], 16, 64)
		if f[2] == name && len(f) == 3 {
			start = a
		}
		addrs = append(addrs, a)
	}
	end := ^uint64(0)
	for _, a := range addrs {
		if a > start && a < end {
			end = a
		}
	}
	return start, end
}

func progStats(b *testing.B, p *ebpf.Program) *ebpf.ProgramStats {
	st, err := p.Stats()
	if err != nil {
		b.Fatal(err)
	}
	return st
}
func enableBPFStats(b *testing.B) func() {
	const path = "/proc/sys/kernel/bpf_stats_enabled"
	old, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("1"), 0); err != nil {
		b.Fatal(err)
	}
	return func() { os.WriteFile(path, old, 0) }
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
