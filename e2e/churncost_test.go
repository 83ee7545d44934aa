package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

func init() { connHelpers["churnrr"] = churnRequestReply }

// BenchmarkChurn measures tcptrace under connection churn, where its hooks
// run most often per byte moved: what its programs cost the kernel per
// connection, hook by hook, beside an empty program on the same hooks (what
// any tracer attached there costs), and how many connections per second
// one thread makes without and with it. Every detector is attached
// host-wide, as tcptrace runs by default. The connections run twice for the
// BPF time, tcptrace's programs ahead of the empty ones and then behind
// them (churnBPFCost). It reports; it asserts nothing about time.
func BenchmarkChurn(b *testing.B) {
	conns, rounds := envOr("TCPTRACE_BENCH_CONNS", 3000), envOr("TCPTRACE_BENCH_ROUNDS", 5)
	ns := newNetns(b)
	churnBPFCost(b, ns, conns)
	churnRate(b, ns, rounds)
}

func churnBPFCost(b *testing.B, ns *netns, conns int) {
	// Restored before the rate rounds: the accounting itself adds two
	// clock reads to every program run.
	restore := enableBPFStats(b)
	defer restore()
	// TCPTRACE_BENCH_ARGS (space-separated), as in BenchmarkBPFCost: a
	// detector's share of the shared hooks.
	args := strings.Fields(os.Getenv("TCPTRACE_BENCH_ARGS"))
	tr := startTracer(b, args...)
	hooks := tracerHooks(b, tr.cmd.Process.Pid)
	names := make([]string, 0, len(hooks))
	empty := map[string]*ebpf.Program{}
	for hook, h := range hooks {
		names = append(names, hook)
		if h.kind != "" {
			p, l := emptyTwin(b, h.kind, h.target)
			defer p.Close()
			defer l.Close() // detached before the rate rounds, which must run without it
			empty[hook] = p
		}
	}
	sort.Strings(names)
	// Each pass runs the connections once. The first program a hook runs
	// costs more than the second, the same program (an empty one first:
	// 35-38 ns a run against 31-32 second, on inet_sock_set_state): so
	// tcptrace runs ahead of its twins in the first pass and behind them
	// in the second (started again once they are attached), and the sums
	// of both compare programs that held each place once.
	first := churnPass(b, ns, conns, tr, hooks, names, empty)
	tr.stop(syscall.SIGINT)
	health := tracerHealth(tr, ns)
	tr = startTracer(b, args...)
	again := tracerHooks(b, tr.cmd.Process.Pid)
	for _, hook := range names {
		if again[hook] == nil {
			b.Fatalf("tcptrace started again has no program on %s", hook)
		}
		hooks[hook].progs, hooks[hook].names = again[hook].progs, again[hook].names
	}
	second := churnPass(b, ns, conns, tr, hooks, names, empty)
	tr.stop(syscall.SIGINT)
	health += "; behind them: " + tracerHealth(tr, ns)

	n := float64(2 * conns)
	var rows []string
	var oursNs, emptyNs, comparedNs float64
	for _, hook := range names {
		runs, t := first[hook].runs+second[hook].runs, first[hook].ns+second[hook].ns
		oursNs += t
		row := fmt.Sprintf("| %s | %s | %.2f | %s | %.0f |", hook, strings.Join(hooks[hook].names, ", "), runs/n, ratio(t, runs, "%.0f"), t/n)
		if empty[hook] != nil {
			eRuns, eNs := first[hook].emptyRuns+second[hook].emptyRuns, first[hook].emptyNs+second[hook].emptyNs
			emptyNs, comparedNs = emptyNs+eNs, comparedNs+t
			row += fmt.Sprintf(" %.2f | %s | %.0f | %s |", eRuns/n, ratio(eNs, eRuns, "%.0f"), eNs/n, ratio(t, eNs, "%.1f×"))
		} else {
			row += " – | – | – | – |"
		}
		rows = append(rows, row)
	}
	rows = append(rows, fmt.Sprintf("| **all hooks** | | | | **%.0f** | | | **%.0f** | **%s** |", oursNs/n, emptyNs/n, ratio(comparedNs, emptyNs, "%.1f×")))
	passes := fmt.Sprintf("Hooks with a twin, per connection, tcptrace ahead of the empty programs: %s; behind them: %s.", first.total(conns), second.total(conns))
	b.ReportMetric(oursNs/n, "bpf-ns/conn-tcptrace")
	b.ReportMetric(emptyNs/n, "bpf-ns/conn-empty")
	benchReport(b, fmt.Sprintf("BPF time per connection under churn (%d connections in each of two passes, kernel.bpf_stats_enabled)", conns),
		"Each connection: connect, accept, 64-byte request and reply, close on both ends (one thread, loopback). "+
			"tcptrace's programs are summed per hook; the ratio compares hooks that have an empty twin; tcptrace runs ahead of the twins in one pass and behind them in the other, and the table sums both. "+
			passes+" tcptrace: "+health+"."+
			"\n\n| hook | tcptrace programs | runs/conn | ns/run | ns/conn | empty runs/conn | empty ns/run | empty ns/conn | tcptrace ÷ empty |\n"+
			"|---|---|---|---|---|---|---|---|---|\n"+strings.Join(rows, "\n"))
}

// hookCost is one pass's runs and time on a hook, tcptrace's and its empty
// twin's.
type hookCost struct{ runs, ns, emptyRuns, emptyNs float64 }

type passCost map[string]*hookCost

// total: the pass's time per connection on the hooks with a twin,
// tcptrace's against the twins'.
func (c passCost) total(conns int) string {
	var ours, empty float64
	for _, h := range c {
		if h.emptyRuns > 0 || h.emptyNs > 0 {
			ours, empty = ours+h.ns, empty+h.emptyNs
		}
	}
	return fmt.Sprintf("%.0f ns against %.0f (%s)", ours/float64(conns), empty/float64(conns), ratio(ours, empty, "%.1f×"))
}

// churnPass runs conns connections and returns what each hook's programs
// spent on them.
func churnPass(b *testing.B, ns *netns, conns int, tr *tracerRun, hooks map[string]*hookProgs, names []string, empty map[string]*ebpf.Program) passCost {
	snapshot := func() map[*ebpf.Program]*ebpf.ProgramStats {
		s := map[*ebpf.Program]*ebpf.ProgramStats{}
		for _, hook := range names {
			for _, p := range hooks[hook].progs {
				s[p] = progStats(b, p)
			}
			if p := empty[hook]; p != nil {
				s[p] = progStats(b, p)
			}
		}
		return s
	}
	h := startHelper(b, ns, "churnrr", 0, fmt.Sprintf("%s=%d", helperCountEnv, conns))
	before := snapshot()
	h.run()
	after := snapshot()
	// The counts are host-wide: what else the host did meanwhile (timers
	// mostly) is charged to the connections, to both columns alike.
	delta := func(progs ...*ebpf.Program) (runs, t float64) {
		for _, p := range progs {
			if p != nil {
				runs += float64(after[p].RunCount - before[p].RunCount)
				t += float64(after[p].Runtime - before[p].Runtime)
			}
		}
		return runs, t
	}
	c := passCost{}
	for _, hook := range names {
		h := &hookCost{}
		h.runs, h.ns = delta(hooks[hook].progs...)
		if p := empty[hook]; p != nil {
			h.emptyRuns, h.emptyNs = delta(p)
		}
		c[hook] = h
	}
	return c
}

// ratio is a/b in format, or a dash for a hook that did not fire.
func ratio(a, b float64, format string) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf(format, a/b)
}

// hookProgs is what tcptrace attached to one hook.
type hookProgs struct {
	progs []*ebpf.Program
	names []string
	// Where an empty twin sits (emptyTwin); kind "": nowhere.
	kind   twinKind
	target string
}

// tracerHooks reads the hooks from tcptrace's own link file descriptors
// rather than from a list kept by hand, so a new probe is measured the day
// it is added and one the kernel lacks is not.
func tracerHooks(b *testing.B, pid int) map[string]*hookProgs {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	fds, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	var kernelBTF *btf.Spec
	var kallsyms map[string]bool
	hooks := map[string]*hookProgs{}
	// Kprobe programs, and those attached through a link: before 5.15 a
	// kprobe has no link, and its program is not counted (said below).
	kprobes, linked := map[ebpf.ProgramID]bool{}, map[ebpf.ProgramID]bool{}
	for _, fd := range fds {
		data, _ := os.ReadFile(filepath.Join(dir, fd.Name()))
		var id, progID uint64
		kprobe := false
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "link_id:"); ok {
				id, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			}
			if v, ok := strings.CutPrefix(line, "prog_id:"); ok {
				progID, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			}
			if v, ok := strings.CutPrefix(line, "prog_type:"); ok {
				kprobe = strings.TrimSpace(v) == strconv.Itoa(int(ebpf.Kprobe))
			}
		}
		if kprobe && progID != 0 {
			kprobes[ebpf.ProgramID(progID)] = true
		}
		if id == 0 {
			continue
		}
		l, err := link.NewFromID(link.ID(id))
		if err != nil {
			b.Fatalf("link %d: %v", id, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			b.Fatalf("link %d: %v", id, err)
		}
		linked[info.Program] = true
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			b.Fatalf("program %d: %v", info.Program, err)
		}
		b.Cleanup(func() { p.Close() })
		pi, err := p.Info()
		if err != nil {
			b.Fatal(err)
		}
		var kind twinKind
		var target string
		switch {
		case info.RawTracepoint() != nil:
			kind, target = twinTracepoint, info.RawTracepoint().Name
		case info.Tracing() != nil:
			// fentry/fexit, on kernels where tcptrace takes that path:
			// the target is the function's BTF id.
			if kernelBTF == nil {
				if kernelBTF, err = btf.LoadKernelSpec(); err != nil {
					b.Fatal(err)
				}
			}
			t, err := kernelBTF.TypeByID(btf.TypeID(info.Tracing().TargetBtfId))
			if err != nil {
				b.Fatalf("link %d: %v", id, err)
			}
			kind, target = twinFentry, t.TypeName()
			if ebpf.AttachType(info.Tracing().AttachType) == ebpf.AttachTraceFExit {
				kind = twinFexit
			}
		case info.Type == link.PerfEventType:
			// A kprobe or kretprobe (the kernel says which function only
			// from 6.6): the function from the program's name.
			if kallsyms == nil {
				kallsyms = kernelFunctions(b)
			}
			k, fn, ok := kprobeTarget(pi.Name, kallsyms)
			if k == "" {
				b.Logf("not counted: program %s on a perf event", pi.Name)
				continue
			}
			kind, target = k, fn
			if !ok {
				kind = "" // counted, without a twin
			}
		default:
			// Iterators run when tcptrace reads them, not per connection.
			b.Logf("not counted: program %d on a link of type %d", info.Program, info.Type)
			continue
		}
		hook := hookName(kind, target)
		if kind == "" {
			hook = pi.Name
		}
		h := hooks[hook]
		if h == nil {
			h = &hookProgs{kind: kind, target: target}
			hooks[hook] = h
		}
		h.progs, h.names = append(h.progs, p), append(h.names, pi.Name)
	}
	for id := range kprobes {
		if !linked[id] {
			b.Logf("not counted: kprobe program %d has no link (a kernel before 5.15)", id)
		}
	}
	if len(hooks) == 0 {
		b.Fatalf("found no hooks in tcptrace's file descriptors")
	}
	return hooks
}

// churnRate runs the churn loop without and with tcptrace in each round,
// alternating which goes first so that a drift over the benchmark (the
// host's other load) falls on both alike. Every run connects to the same
// server port: the TIME_WAIT sockets then stay bounded by the client's
// ports, each new SYN finding one (as under steady churn), instead of piling
// up per port until tcp_max_tw_buckets overflows midway.
func churnRate(b *testing.B, ns *netns, rounds int) {
	const run = 2 * time.Second
	port := 0
	var none, traced, diffs []float64
	var health []string
	for r := 0; r < rounds; r++ {
		var rate [2]float64
		for i := 0; i < 2; i++ {
			withTracer := (r+i)%2 == 1
			var tr *tracerRun
			if withTracer {
				tr = startTracer(b, strings.Fields(os.Getenv("TCPTRACE_BENCH_ARGS"))...)
			}
			h := startHelper(b, ns, "churnrr", run, fmt.Sprintf("%s=%d", helperPortEnv, port))
			port = h.Port
			res := h.run()
			c, _ := strconv.ParseFloat(res["conns"], 64)
			d, _ := strconv.ParseFloat(res["ns"], 64)
			if withTracer {
				tr.stop(syscall.SIGINT)
				health = append(health, tracerHealth(tr, ns))
				rate[1] = c / d * 1e9
			} else {
				rate[0] = c / d * 1e9
			}
		}
		none, traced = append(none, rate[0]), append(traced, rate[1])
		diffs = append(diffs, 100*(rate[1]/rate[0]-1))
		b.Logf("round %d: %.0f conn/s without tcptrace, %.0f with (%+.1f%%)", r+1, rate[0], rate[1], diffs[r])
	}
	mNone, mTraced, mDiff := medianOf(none), medianOf(traced), medianOf(diffs)
	seen := "run by run: " + strings.Join(health, "; ")
	if slices.Equal(health, slices.Repeat(health[:1], len(health))) {
		seen = "every run: " + health[0]
	}
	b.ReportMetric(mNone, "conn/s-none")
	b.ReportMetric(mTraced, "conn/s-tcptrace")
	benchReport(b, fmt.Sprintf("Connection rate under churn: %d interleaved rounds of %v each, medians (lowest-highest)", rounds, run),
		fmt.Sprintf("tcptrace, %s.\n\n| tracer | connections/s | vs none |\n|---|---|---|\n"+
			"| none | %.0f (%.0f-%.0f) | |\n| tcptrace | %.0f (%.0f-%.0f) | %+.1f%% (same round: median %+.1f%%, %+.1f%% to %+.1f%%) |",
			seen, mNone, none[0], none[len(none)-1], mTraced, traced[0], traced[len(traced)-1],
			100*(mTraced/mNone-1), mDiff, diffs[0], diffs[len(diffs)-1]))
}

// tracerHealth is what tcptrace saw and what its summary says it missed:
// the figures stand for a tracer that kept up only if both are zero, and
// events elsewhere are other load on the host during the run.
func tracerHealth(tr *tracerRun, ns *netns) string {
	var lost uint64
	for _, m := range lostLine.FindAllStringSubmatch(tr.stderrText(), -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		lost += n
	}
	here, elsewhere := map[string]int{}, 0
	ino := ns.inode()
	for _, e := range tr.eventsFor("", 0) {
		if e.NetNS == ino {
			here[e.Event]++
		} else {
			elsewhere++
		}
	}
	seen := []string{}
	for name, n := range here {
		seen = append(seen, fmt.Sprintf("%d %s", n, name))
	}
	sort.Strings(seen)
	if len(seen) == 0 {
		seen = []string{"none"}
	}
	return fmt.Sprintf("events in the namespace: %s, elsewhere on the host: %d; lost events: %d; skipped program runs: %d",
		strings.Join(seen, ", "), elsewhere, lost, tr.skippedRuns())
}

// medianOf sorts v in place, so v[0] and v[len(v)-1] are its range.
func medianOf(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func envOr(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// churnRequestReply makes TCPTRACE_E2E_COUNT connections, or as many as fit
// in d, to a listener on TCPTRACE_E2E_PORT (0: any), one after another in one thread: connect, accept, a 64-byte request
// and reply, the server closes, then the client. On loopback each step is
// done in the kernel by the time the call returns, so one thread can play
// both ends, and no scheduler hand-off between threads blurs the figures.
// The server closing first keeps the TIME_WAIT on its side, so the client's
// ports never run out.
func churnRequestReply(d time.Duration) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	// The port's TIME_WAIT sockets from the previous run would refuse it.
	unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: envInt(helperPortEnv)}); err != nil {
		return err
	}
	if err := unix.Listen(ln, 1024); err != nil {
		return err
	}
	port, _ := localPort(ln)
	if err := readyAndWait(port); err != nil {
		return err
	}
	count := envInt(helperCountEnv)
	buf := make([]byte, 64)
	start := time.Now()
	n := 0
	for ; count > 0 && n < count || count == 0 && time.Since(start) < d; n++ {
		if err := requestReply(ln, port, buf); err != nil {
			return fmt.Errorf("connection %d: %w", n, err)
		}
	}
	fmt.Printf("RESULT conns=%d ns=%d\n", n, time.Since(start).Nanoseconds())
	return nil
}

func requestReply(ln, port int, buf []byte) error {
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(c)
	if err := unix.Connect(c, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		return err
	}
	s, _, err := unix.Accept(ln)
	if err != nil {
		return err
	}
	_, err = unix.Write(c, buf)
	if err == nil {
		_, err = io.ReadFull(fdReader(s), buf)
	}
	if err == nil {
		_, err = unix.Write(s, buf)
	}
	unix.Close(s)
	if err == nil {
		_, err = io.ReadFull(fdReader(c), buf)
	}
	if err == nil {
		if n, _ := unix.Read(c, buf); n != 0 {
			err = fmt.Errorf("%d bytes after the reply, want the server's FIN", n)
		}
	}
	return err
}
