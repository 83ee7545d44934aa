package e2e

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
)

// BenchmarkBPFCost measures what tcptrace's programs cost the kernel per run,
// with the kernel's own accounting (kernel.bpf_stats_enabled): run_time_ns /
// run_cnt of each program, beside an empty program attached to the same
// tracepoint in the same run (the floor). The loads: a small-message
// request/response loop (every send runs the send hooks; none fails), a
// sender spinning on EAGAIN (the detector's own path), and connection churn
// (every SYN, state change and freed skb runs the listener hooks). It reports; it
// asserts nothing about time.
func BenchmarkBPFCost(b *testing.B) {
	restore := enableBPFStats(b)
	defer restore()

	floors := map[string]*ebpf.Program{}
	for _, tp := range []string{"sock_send_length", "tcp_sendmsg_locked", "consume_skb", "kfree_skb", "inet_sock_set_state"} {
		prog, l := emptyTracingProgram(b, tp)
		defer prog.Close()
		defer l.Close()
		floors[tp] = prog
	}
	before := loadedPrograms(b)
	tr := startTracer(b)
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
	var rows []string
	for _, load := range []struct {
		mode string
		d    time.Duration
	}{{"pingpong", 3 * time.Second}, {"spin", 2 * time.Second}, {"churn", 3 * time.Second}} {
		before := map[string]*ebpf.ProgramStats{}
		for name, p := range progs {
			before[name] = progStats(b, p)
		}
		h := startHelper(b, ns, load.mode, load.d)
		res := h.run()
		rows = append(rows, fmt.Sprintf("load %s %v:", load.mode, res))
		var lines []string
		for name, p := range progs {
			after := progStats(b, p)
			runs := after.RunCount - before[name].RunCount
			if runs == 0 {
				continue
			}
			perRun := float64(after.Runtime-before[name].Runtime) / float64(runs)
			lines = append(lines, fmt.Sprintf("  %-36s %10d runs %8.1f ns/run", name, runs, perRun))
			b.ReportMetric(perRun, "ns/run-"+load.mode+"-"+strings.TrimPrefix(strings.ReplaceAll(name, "/", "_"), "(empty) "))
		}
		sort.Strings(lines)
		rows = append(rows, lines...)
	}
	tr.stop(syscall.SIGINT)
	b.Logf("BPF cost per run (kernel.bpf_stats_enabled, %s):\n%s", kernelRelease(), strings.Join(rows, "\n"))
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

// emptyTracingProgram attaches `return 0` to a BTF tracepoint.
func emptyTracingProgram(b *testing.B, tp string) (*ebpf.Program, link.Link) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "empty_floor",
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceRawTp,
		AttachTo:     tp,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		b.Fatalf("empty program on %s: %v", tp, err)
	}
	l, err := link.AttachTracing(link.TracingOptions{Program: prog})
	if err != nil {
		b.Fatalf("attaching the empty program to %s: %v", tp, err)
	}
	return prog, l
}

func kernelRelease() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}
