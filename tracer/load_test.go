package tracer

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeLoader stands for the kernel: it refuses the paths whose first
// program is in refuse, with that error, and records what it was asked.
type fakeLoader struct {
	refuse   map[string]error
	loaded   []string // first program of each path loaded
	tried    []string
	hooks    uint32
	hooksErr error
}

func (f *fakeLoader) loadPath(p *pathSpec) error {
	name := p.progs[0].prog
	f.tried = append(f.tried, name)
	if err := f.refuse[name]; err != nil {
		return err
	}
	f.loaded = append(f.loaded, name)
	return nil
}

func (f *fakeLoader) setHooks(bits uint32) error {
	if f.hooksErr != nil {
		return f.hooksErr
	}
	f.hooks |= bits
	return nil
}

// goodFacts: a kernel with every fact the paths' preconditions read.
func goodFacts() *kernelFacts {
	return &kernelFacts{
		rspStart: 1, cookie4Start: 1, delackTimer: 1,
		listenOverflow: true, consumeLocation: true, synRecvNargs: 7,
		conn: &connFacts{rtxErrArg: true, sendResetReason: true, kfreeRxSk: true, twTimerHandler: 1,
			pawsReasons: []string{"TCP_RFC7323_PAWS", "TCP_RFC7323_TW_PAWS"}},
	}
}

func statusOf(t *testing.T, st []ProbeStatus, e EventType) ProbeStatus {
	t.Helper()
	for _, s := range st {
		if containsEvent(s.Events, e) {
			return s
		}
	}
	t.Fatalf("no status for %s in %+v", e, st)
	return ProbeStatus{}
}

// The first path that loads is used; the ones before it are reported, as
// unsupported when the kernel lacks them and as errors otherwise.
func TestAttachFallsBackPathByPath(t *testing.T) {
	l := &fakeLoader{refuse: map[string]error{
		"tp_sock_send_length": fmt.Errorf("%w: hook not in this kernel", errUnsupported),
		"fexit_tcp_sendmsg":   errors.New("the verifier rejected the program"),
	}}
	st := attachAll(l, []*detector{sendDetector}, []EventType{SendEAGAIN}, 0, goodFacts())
	if len(st) != 1 {
		t.Fatalf("statuses %+v, want send_eagain's only", st)
	}
	s := st[0]
	if s.Path != PathKprobe || s.Hooks != "kprobe+kretprobe/tcp_sendmsg" || len(s.Tried) != 2 {
		t.Fatalf("status %+v", s)
	}
	if s.Tried[0].Path != PathTracepoint || !s.Tried[0].Unsupported || s.Tried[1].Path != PathFentry || s.Tried[1].Unsupported {
		t.Errorf("failures %+v: the tracepoint unsupported, the fentry verifier rejection an error", s.Tried)
	}
	if l.hooks != hookEAGAIN {
		t.Errorf("hooks_on %#x, want the kprobe path's %#x", l.hooks, hookEAGAIN)
	}
}

// A path whose precondition fails is not loaded at all.
func TestAttachSkipsPathsTheKernelCannotRun(t *testing.T) {
	f := goodFacts()
	f.consumeLocation = false
	l := &fakeLoader{}
	st := attachAll(l, []*detector{listenDetector}, []EventType{SynDrop}, 0, f)
	s := statusOf(t, st, SynDrop)
	if s.Path != PathFentry || len(s.Tried) != 1 || !s.Tried[0].Unsupported || !strings.Contains(s.Tried[0].Err.Error(), "consume_skb") {
		t.Fatalf("status %+v", s)
	}
	for _, p := range l.tried {
		if p == "tp_consume_skb" {
			t.Errorf("the tracepoint path was loaded although its precondition failed")
		}
	}
	if s.using == nil || s.using.baselines {
		t.Errorf("the fentry path needs no counter baselines: %+v", s.using)
	}
}

// --force-path: only that path is tried; a set without one says so.
func TestAttachForcedPath(t *testing.T) {
	l := &fakeLoader{}
	st := attachAll(l, []*detector{listenDetector}, []EventType{SynDrop, SynackRetransmit}, PathKprobe, goodFacts())
	if s := statusOf(t, st, SynDrop); s.Path != PathKprobe || len(s.Tried) != 0 {
		t.Errorf("syn_drop: %+v", s)
	}
	s := statusOf(t, st, SynackRetransmit)
	if s.Path != 0 || len(s.Tried) != 1 || s.Tried[0].Path != PathKprobe || !s.Tried[0].Unsupported ||
		!strings.Contains(s.Tried[0].Err.Error(), "synack_retransmit has no kprobe path") {
		t.Errorf("synack_retransmit: %+v", s)
	}
	for _, p := range l.tried {
		if !strings.HasPrefix(p, "kprobe_") {
			t.Errorf("%s loaded with the kprobe path forced", p)
		}
	}
	// A forced path the kernel refuses: no fallback to another.
	l = &fakeLoader{refuse: map[string]error{"kprobe_tcp_conn_request": fmt.Errorf("%w: no kprobes", errUnsupported)}}
	st = attachAll(l, []*detector{listenDetector}, []EventType{SynDrop}, PathKprobe, goodFacts())
	if s := statusOf(t, st, SynDrop); s.Path != 0 || len(s.Tried) != 1 || len(l.loaded) != 0 {
		t.Errorf("refused forced path: %+v, loaded %v", s, l.loaded)
	}
}

// When the shared programs cannot be turned on, every set that relies on
// them is reported as not working; the others stay.
func TestAttachRollsBackSharedHooks(t *testing.T) {
	l := &fakeLoader{hooksErr: errors.New("hooks_on: permission denied")}
	st := attachAll(l, []*detector{sendDetector, listenDetector}, []EventType{SendEAGAIN, SynDrop}, 0, goodFacts())
	s := statusOf(t, st, SendEAGAIN)
	if s.Path != 0 || s.using != nil || len(s.Tried) != 1 || !strings.Contains(s.Tried[0].Err.Error(), "hooks_on") || s.Tried[0].Path != PathTracepoint {
		t.Errorf("send_eagain, on a shared program: %+v", s)
	}
	if s := statusOf(t, st, SynDrop); s.Path != PathTracepoint || len(s.Tried) != 0 {
		t.Errorf("syn_drop, on its own program: %+v", s)
	}
}

// Only the sets of wanted events are loaded, in the detectors' order.
func TestAttachOnlyWantedSets(t *testing.T) {
	l := &fakeLoader{}
	st := attachAll(l, detectors, []EventType{Reset, SendBlocked}, 0, goodFacts())
	if len(st) != 2 || st[0].Names() != "send_blocked" || st[1].Names() != "reset" {
		t.Fatalf("statuses %+v", st)
	}
	if want := []string{"tp_tcp_sendmsg_locked", "tp_tcp_send_reset_reason"}; strings.Join(l.loaded, " ") != strings.Join(want, " ") {
		t.Errorf("loaded %v, want %v", l.loaded, want)
	}
}
