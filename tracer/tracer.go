// Package tracer loads tcptrace's BPF programs, picks for each event the best
// probe path the running kernel supports, and turns what the kernel reports
// into annotated Events.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// Options selects what to trace.
type Options struct {
	// PIDs limits tracing to sockets of these processes (threads included).
	PIDs []uint32
	// Cgroups limits tracing to processes in these cgroups (v2 paths
	// below the hierarchy's root) and their descendants, made later too.
	Cgroups []string
	// Port keeps only connections with this local or remote port (0: any).
	Port uint16
	// Family is 4, 6, or 0 for both.
	Family int
	// Events to trace; empty means all.
	Events []EventType
	// Interval is how often an aggregated connection gets a line (default 1 s).
	Interval time.Duration
	// ForcePath restricts every event to one probe path (tests use it to
	// exercise each path on each kernel); 0 picks the best that works.
	ForcePath ProbePath
}

// Tracer holds the loaded programs until Close.
type Tracer struct {
	opts   Options
	objs   *objects
	status []ProbeStatus
	reader *ringbuf.Reader
	// cgroupFilter: the cgroups --cgroup and --container trace, nil: all.
	cgroupFilter *cgroupFilter
	dec          *decoder
	agg          *aggregator
	closeMu      sync.Mutex
	closed       bool
	lost         map[EventType]uint64
	skipped      map[string]uint64 // program runs the kernel skipped (recursion guard)
	unjudged     uint64            // SYNs whose outcome could not be told (listen.go)
	rtxFolded    uint64            // retransmitted segments counted in a later line (retransmit.go)
	synUnseen    uint64            // SYN retransmits no line counted, found at connect()'s end (connect.go)
	rtoUnwatched uint64            // RTO episodes rto_stall could not watch (retransmit.go)
	// ownerErr says why socket owners are partly unknown (nil: all known).
	ownerErr error
	// baselineErr says why some SYNs may be judged by the listener's state
	// instead of the counters (mib_baseline.go).
	baselineErr error
	// The kernel's counters of some events, at the start and against what
	// was reported (kcounters.go); checks is empty when none applies.
	checks []counterCheck
	kstart netstats
	// seenMu guards seen: Run counts into it while a scrape of the
	// metrics compares it with the kernel's counters (CounterChecksNow).
	seenMu   sync.Mutex
	seen     seenCounts
	counters []CounterCheck
}

// OwnerError says why events seen outside their owner's context (softirq,
// timers: detector.needs.owners) may lack their owner, or nil.
func (t *Tracer) OwnerError() error { return t.ownerErr }

// BaselineError says why some first SYNs on a CPU may be judged by the
// listener's state rather than by the counters, or nil.
func (t *Tracer) BaselineError() error { return t.baselineErr }

// needsBaselines: a path that judges by the per-CPU counters' movement is
// attached (mib_baseline.go).
func (t *Tracer) needsBaselines() bool {
	for _, s := range t.status {
		if s.using != nil && s.using.baselines {
			return true
		}
	}
	return false
}

// snapshotRefresh is how stale an aggregated line's snapshot may be: often
// enough to be current when the line is printed, rare enough that a spinning
// sender does not pay for a full socket read on every EAGAIN.
func snapshotRefresh(interval time.Duration) time.Duration {
	if r := interval / 10; r < 50*time.Millisecond {
		return r
	}
	return 50 * time.Millisecond
}

// New loads and attaches. On any error nothing stays loaded. An event that no
// probe path supports is not an error: see Status.
func New(opts Options) (*Tracer, error) {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if len(opts.Events) == 0 {
		opts.Events = AllEventTypes()
	}
	if err := checkKernelSupport(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK (64 KiB by
	// default); later ones use cgroup accounting and this does nothing.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raising RLIMIT_MEMLOCK for BPF maps (kernels before 5.11 need it): %w", err)
	}
	attach := attachedEvents(opts.Events)
	need := neededBy(attach)
	// The slow reads of start-up run side by side: the kernel generating
	// /proc/kallsyms (~60 ms of system time), decoding the kernel's BTF
	// (~20 ms) and parsing the embedded object (~20 ms). Both readers are
	// safe to call again: later callers wait for the first.
	kernelBTF := btf.NewCache()
	if need.kernelFacts || need.connFacts {
		go kernelSymbols()
		go kernelBTF.Kernel()
	}
	spec, vars, err := loadSpec(&opts)
	if err != nil {
		return nil, err
	}
	facts := &kernelFacts{err: errors.New("not needed")}
	if need.kernelFacts {
		facts = readKernelFacts(kernelBTF)
		if err := setKernelFacts(vars, facts); err != nil {
			return nil, err
		}
	}
	if need.connFacts {
		facts.conn = readConnFacts(kernelBTF)
		if err := setConnFacts(vars, facts.conn); err != nil {
			return nil, err
		}
	}
	t := &Tracer{opts: opts, objs: &objects{kernelBTF: kernelBTF, attached: map[string]bool{}}, dec: newDecoder(kernelHZ()), lost: map[EventType]uint64{}}
	t.dec.owners = newInodeOwners(opts.PIDs)
	t.dec.conn = facts.conn
	ok := false
	defer func() {
		if !ok {
			t.objs.close()
		}
	}()
	if t.objs.maps, err = createMaps(spec, vars, kernelBTF); err != nil {
		return nil, err
	}
	if err := t.objs.typed(); err != nil {
		return nil, fmt.Errorf("the embedded BPF object: %w", err)
	}
	if err := t.fillPIDFilter(); err != nil {
		return nil, err
	}
	t.status = attachAll(kernelLoader{spec, t.objs}, detectors, attach, opts.ForcePath, facts)
	if len(t.objs.links) == 0 {
		return nil, &NoProbeError{Status: t.status}
	}
	if need.owners {
		// Owners after the detectors: a socket made in between is seen
		// by the tracepoint, and the iterator does not overwrite it.
		t.ownerErr = attachOwnerTracking(spec, t.objs, opts.PIDs)
	}
	if t.needsBaselines() {
		if _, err := takeMibBaselines(spec, t.objs, opts.PIDs); err != nil {
			t.baselineErr = err
		}
	}
	if t.reader, err = ringbuf.NewReader(t.objs.m.Events); err != nil {
		return nil, fmt.Errorf("opening the ring buffer: %w", err)
	}
	t.objs.kernelBTF = nil
	t.agg = newAggregator(t.objs.m.Aggregates, t.objs.m.WaitStarts, t.dec, opts.Interval)
	t.agg.attempts = t.objs.m.SynRtxAttempts
	t.startCounterChecks()
	ok = true
	return t, nil
}

// checkKernelSupport turns the two common set-up problems into one clear line
// each, before the loader would report them as a cryptic BPF error.
func checkKernelSupport() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("no kernel BTF: /sys/kernel/btf/vmlinux is missing (tcptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)")
	}
	return nil
}

// NoProbeError: not one of the wanted events can be traced on this kernel.
// Status says why, path by path.
type NoProbeError struct {
	Status []ProbeStatus
}

func (e *NoProbeError) Error() string {
	msg := "no probe could be attached"
	for _, s := range e.Status {
		for _, f := range s.Tried {
			msg += fmt.Sprintf("; %s via %s: %v", s.Names(), f.Path, f.Err)
		}
	}
	return msg
}

func (t *Tracer) fillPIDFilter() error {
	m := t.objs.m.PidFilter
	for _, pid := range t.opts.PIDs {
		if err := m.Put(pid, uint8(1)); err != nil {
			return fmt.Errorf("setting the pid filter: %w", err)
		}
	}
	if len(t.opts.Cgroups) > 0 {
		t.cgroupFilter = &cgroupFilter{cg: t.dec.cgroups, roots: t.opts.Cgroups, m: t.objs.m.CgroupFilter, put: map[uint64]bool{}}
		if err := t.cgroupFilter.refresh(); err != nil {
			return err
		}
	}
	return nil
}

// Status says, for each wanted event, which probe path is in use or why none is.
func (t *Tracer) Status() []ProbeStatus { return t.status }

// Run streams events to emit until ctx is done, then detaches every program,
// drains what the kernel still holds and prints the aggregated counts that
// are left, so that the counts of a run add up exactly. idle is called
// whenever nothing is left to read for now (the moment to flush buffered
// output), and last before Run returns. Both are called from this goroutine
// only.
func (t *Tracer) Run(ctx context.Context, emitAll func(Event), idle func()) error {
	// A detector may give more events than asked for (syn_drop comes with
	// syn_cookie, nagle_delack_stall with delayed_ack).
	emit := func(e Event) {
		if containsEvent(t.opts.Events, e.Type) {
			if t.seen != nil {
				t.seenMu.Lock()
				t.seen.add(&e)
				t.seenMu.Unlock()
			}
			emitAll(e)
		}
	}
	var rec ringbuf.Record
	var raw tcptraceEvent
	next := time.Now().Add(t.opts.Interval)
	handle := func() error {
		if err := parseRaw(rec.RawSample, &raw); err != nil {
			return err
		}
		emit(t.dec.decode(&raw, tally{count: raw.Count, wait: time.Duration(raw.WaitNs), maxWait: time.Duration(raw.MaxWaitNs)}))
		return nil
	}
	// Flush wakes a reader blocked in ReadInto; the loop then sees ctx.
	stop := context.AfterFunc(ctx, func() { t.reader.Flush() })
	defer stop()
	for ctx.Err() == nil {
		t.reader.SetDeadline(next)
		err := t.reader.ReadInto(&rec)
		switch {
		case err == nil:
			if err := handle(); err != nil {
				return err
			}
			if t.reader.AvailableBytes() == 0 {
				idle()
			}
			continue
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, ringbuf.ErrFlushed):
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("reading the ring buffer: %w", err)
		}
		if time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(t.opts.Interval)
		if err := t.agg.flush(emit, false); err != nil {
			return err
		}
		if err := t.cgroupFilter.refresh(); err != nil {
			return err
		}
		idle()
	}
	// Detach first: after this no program runs, so what the ring buffer and
	// the aggregation table hold is final. What the kprobes missed is read
	// from their links, so just before.
	kprobeMissed := t.objs.kprobeMissed()
	var kend netstats
	if len(t.checks) > 0 {
		kend = readNetstats()
	}
	if err := t.objs.closeLinks(); err != nil {
		return fmt.Errorf("detaching: %w", err)
	}
	t.reader.SetDeadline(time.Now())
	for {
		err := t.reader.ReadInto(&rec)
		if errors.Is(err, ringbuf.ErrFlushed) {
			continue
		}
		if err != nil {
			break
		}
		if err := handle(); err != nil {
			return err
		}
	}
	if err := t.agg.flush(emit, true); err != nil {
		return err
	}
	idle()
	if err := checkScratchReturned(t.objs.m.Scratch); err != nil {
		return err
	}
	t.skipped = t.objs.skippedRuns(kprobeMissed)
	t.unjudged = sumPerCPU(t.objs.m.SynUnjudged)
	t.rtxFolded = sumPerCPU(t.objs.m.RtxFolded)
	t.synUnseen = sumPerCPU(t.objs.m.SynRtxUnseen)
	t.rtoUnwatched = sumPerCPU(t.objs.m.RtoUnwatched)
	if kend != nil {
		t.counters = compareCounters(t.checks, t.kstart, kend, t.seen)
	}
	return t.readLost()
}

// readLost sums the per-CPU counters of records the kernel could not hand
// over (ring buffer or aggregation table full).
func (t *Tracer) readLost() error {
	lost, err := t.lostNow()
	if err != nil {
		return err
	}
	t.lost = lost
	return nil
}

// Lost returns, after Run, how many records per event could not be sent
// through the ring buffer. Their counts were carried into a later line
// whenever the aggregation table had room.
func (t *Tracer) Lost() map[EventType]uint64 { return t.lost }

// UnjudgedSYNs is, after Run, how many SYNs the tracepoint path could not
// judge: the first a CPU handled in a namespace, with no counter baseline,
// at a SYN queue at its limit (bpf/listen.bpf.c syn_outcome_by_state).
func (t *Tracer) UnjudgedSYNs() uint64 { return t.unjudged }

// RetransmitFolded is, after Run, how many retransmitted segments were
// counted in a line of their socket other than their own
// (bpf/retransmit.bpf.h rtx_folded).
func (t *Tracer) RetransmitFolded() uint64 { return t.rtxFolded }

// SynRetransmitsUnseen is, after Run, how many SYN retransmits no
// syn_retransmit line counted, as their sockets' own counters said when
// their connect() ended (bpf/connect.bpf.c syn_rtx_unseen).
func (t *Tracer) SynRetransmitsUnseen() uint64 { return t.synUnseen }

// RTOUnwatched is, after Run, how many RTO episodes rto_stall did not watch:
// its table of sockets in an episode was full (bpf/retransmit.bpf.h
// rto_unwatched).
func (t *Tracer) RTOUnwatched() uint64 { return t.rtoUnwatched }

// SkippedRuns is, per program, how many hits of its hook the kernel did not
// run it on (objects.skippedRuns); read when Run returns.
func (t *Tracer) SkippedRuns() map[string]uint64 { return t.skipped }

// CounterChecks is, after Run, the kernel's counters against what tcptrace
// reported, per namespace (nil when the run has no check: kcounters.go).
func (t *Tracer) CounterChecks() []CounterCheck { return t.counters }

// startCounterChecks reads the kernel's counters of the checked events whose
// detector is attached, now that the probes run.
func (t *Tracer) startCounterChecks() {
	var attached []EventType
	for _, st := range t.status {
		if st.Path != 0 {
			attached = append(attached, st.Events...)
		}
	}
	for _, c := range counterChecksFor(t.opts) {
		if c.within(attached) {
			t.checks = append(t.checks, c)
		}
	}
	if len(t.checks) == 0 {
		return
	}
	t.seen = seenCounts{}
	for _, c := range t.checks {
		for _, term := range c.terms {
			t.seen[term] = map[uint32]uint64{}
		}
	}
	t.kstart = readNetstats()
}

// Close detaches and unloads everything. It is safe to call more than once
// and from another goroutine than Run.
func (t *Tracer) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.reader != nil {
		errs = append(errs, t.reader.Close())
	}
	errs = append(errs, t.objs.close())
	return errors.Join(errs...)
}

// lostNow sums, per event, the per-CPU counters of records the kernel could
// not hand over so far. Safe beside Run: it only reads a map.
func (t *Tracer) lostNow() (map[EventType]uint64, error) {
	lost := map[EventType]uint64{}
	for _, et := range AllEventTypes() {
		var per []uint64
		if err := t.objs.m.Lost.Lookup(uint32(et), &per); err != nil {
			return nil, fmt.Errorf("reading lost-event counters: %w", err)
		}
		for _, v := range per {
			lost[et] += v
		}
	}
	return lost, nil
}

// tracedEvents are the events asked for (all when none were named).
func (t *Tracer) tracedEvents() []EventType { return t.opts.Events }

// skippedNow is, per program, the hook hits it missed so far (SkippedRuns).
// Safe beside Run: it reads the programs' and links' counters.
func (t *Tracer) skippedNow() map[string]uint64 {
	return t.objs.skippedRuns(t.objs.kprobeMissed())
}

// CounterChecksNow is the kernel's counters against what tcptrace has
// reported so far (nil when the run has no check): what the metrics show
// while the run goes on. It reads every namespace's counters.
func (t *Tracer) CounterChecksNow() []CounterCheck {
	if len(t.checks) == 0 {
		return nil
	}
	now := readNetstats()
	t.seenMu.Lock()
	seen := seenCounts{}
	for term, byNS := range t.seen {
		seen[term] = maps.Clone(byNS)
	}
	t.seenMu.Unlock()
	return compareCounters(t.checks, t.kstart, now, seen)
}
