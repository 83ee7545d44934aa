package tracer

import (
	"strings"
	"time"
)

// A detector is one family of events under one name, the same from
// bpf/<name>.bpf.c to tracer/<name>.go, tracer/<name>_test.go and
// e2e/<name>_test.go. Its descriptor, in tracer/<name>.go, is everything the
// rest of the package needs to know about it: New, the loader, decoding,
// the summary and the counter checks read the descriptors and nothing else
// about a detector. Adding one is a descriptor, its files, and a line in
// `detectors`.
type detector struct {
	name string
	// events it reports, in the order --events and the summary list them.
	events []eventSpec
	// reasons its events carry: each event's reason is one of these.
	reasons []Reason
	// probes: the sets of programs loaded together, each with its paths.
	probes []probeSet
	needs  needs
	// settings are the BPF constants the detector sets from the wanted
	// events: work its programs skip when not asked for.
	settings func(wanted []EventType, v *tcptraceVariableSpecs) []setting
	// companions: when the key is wanted, the value's detector runs too
	// (it records what the key's detector reads).
	companions map[EventType]EventType
	// counters: kernel counters the events are reconciled with at the end
	// of a run (kcounters.go).
	counters []counterCheck
	// durations: the durations its events carry that the metrics sink
	// keeps as histograms (metrics.go).
	durations []durationSpec
	// decode builds an event from a record: who, where, the reason and the
	// details. explain writes its sentence; every figure in it is one of
	// the details.
	decode  func(d *decoder, r *tcptraceEvent, t tally) Event
	explain func(e Event, t tally) string
}

// durationSpec is a duration some of a detector's events carry, exported as
// the histogram tcptrace_<name>_seconds.
type durationSpec struct {
	name   string
	help   string
	events []EventType
	// sum is the summed duration of the occurrences a line counts; false
	// when the line does not know it.
	sum func(e *Event) (time.Duration, bool)
}

// eventSpec is one event: its type (the C enum's value) and its name (the
// `event` field of the JSON contract and what --events takes).
type eventSpec struct {
	typ  EventType
	name string
}

// needs is what a detector needs besides its own programs.
type needs struct {
	// owners: socket owner tracking (owners.go), for events seen in
	// softirq or timer context, where the current task is not the
	// socket's owner.
	owners bool
	// kernelFacts: addresses from /proc/kallsyms, per-CPU offsets and
	// MIB indexes (kernel.go).
	kernelFacts bool
	// connFacts: tracepoint prototypes and reason names of the connection
	// detectors (conn_kernel.go).
	connFacts bool
}

// detectors lists every detector; their order is the order of events in
// --events, the summary and the probe status.
var detectors = []*detector{
	sendDetector,
	listenDetector,
	delackDetector,
	nagleDetector,
	connectDetector,
	portsDetector,
	timewaitDetector,
	pawsDetector,
	resetDetector,
	retransmitDetector,
}

// byType finds an event's detector without a map lookup on the path every
// record takes. Filled by init: decoding reads it, and a variable's
// initializer that reached decoding would make an initialization cycle.
var byType [256]*detector

// eventNames: each event's name, filled with byType.
var eventNames = map[EventType]string{}

func init() {
	for _, d := range detectors {
		for _, e := range d.events {
			byType[e.typ] = d
			eventNames[e.typ] = e.name
		}
	}
}

// detectorOf is the detector of an event type, nil for a type no detector
// reports.
func detectorOf(t EventType) *detector { return byType[t] }

// has says whether the detector reports event t.
func (d *detector) has(t EventType) bool {
	for _, e := range d.events {
		if e.typ == t {
			return true
		}
	}
	return false
}

// wanted says whether any of the detector's events is in events.
func (d *detector) wanted(events []EventType) bool {
	for _, e := range d.events {
		if containsEvent(events, e.typ) {
			return true
		}
	}
	return false
}

// attachedEvents is what must be traced to give the wanted events: the
// wanted ones and their companions.
func attachedEvents(wanted []EventType) []EventType {
	out := append([]EventType(nil), wanted...)
	for _, d := range detectors {
		for e, with := range d.companions {
			if containsEvent(wanted, e) && !containsEvent(out, with) {
				out = append(out, with)
			}
		}
	}
	return out
}

// neededBy is what the detectors of the events need, together.
func neededBy(events []EventType) needs {
	var n needs
	for _, d := range detectors {
		if d.wanted(events) {
			n.owners = n.owners || d.needs.owners
			n.kernelFacts = n.kernelFacts || d.needs.kernelFacts
			n.connFacts = n.connFacts || d.needs.connFacts
		}
	}
	return n
}

// detectorSettings is every detector's BPF constants for the wanted events.
func detectorSettings(wanted []EventType, v *tcptraceVariableSpecs) []setting {
	var out []setting
	for _, d := range detectors {
		if d.settings != nil {
			out = append(out, d.settings(wanted, v)...)
		}
	}
	return out
}

// ProbeStatus is what the loader decided for one set of programs.
type ProbeStatus struct {
	Events []EventType
	// Path is the path in use, 0 if none works.
	Path  ProbePath
	Hooks string
	// Tried lists every path tried and why it failed, in order.
	Tried []PathFailure
	// using is the path in use (nil: none).
	using *pathSpec
}

// Names lists the status's events, comma-separated.
func (s ProbeStatus) Names() string {
	var n []string
	for _, e := range s.Events {
		n = append(n, e.String())
	}
	return strings.Join(n, ",")
}

// PathFailure says why one probe path could not be used.
type PathFailure struct {
	Path  ProbePath
	Hooks string
	Err   error
	// Unsupported: the kernel lacks what the path needs (a hook, an
	// argument, a feature), as opposed to an error in tcptrace (a verifier
	// rejection) that a kernel with the feature should not show.
	Unsupported bool
}

// A detector's probe paths: the ways the running kernel may let it see its
// events, best first. The loader (load.go) takes the first path whose
// programs load and attach. Tracepoints come first because they are a
// stable ABI and the cheapest to run; fentry/fexit next (BTF trampolines,
// but refused under some lockdown configurations); kprobes last (need
// CONFIG_KPROBES and a symbol that was not inlined).

type attachKind int

const (
	attachTracing   attachKind = iota // tp_btf, fentry, fexit: target is in the section name
	attachKprobe                      // kprobe on symbol
	attachKretprobe                   // kretprobe on symbol
)

type progAttach struct {
	prog   string // program name in the BPF object
	kind   attachKind
	symbol string // kprobe target
}

// attach lists a path's programs by their names in the BPF object. The name
// says how each attaches: kprobe_<symbol> and kretprobe_<symbol> on that
// kernel symbol; any other name is a tracing program whose section names
// its target (tp_btf, fentry, fexit).
func attach(progs ...string) []progAttach {
	out := make([]progAttach, len(progs))
	for i, p := range progs {
		switch {
		case strings.HasPrefix(p, "kprobe_"):
			out[i] = progAttach{prog: p, kind: attachKprobe, symbol: strings.TrimPrefix(p, "kprobe_")}
		case strings.HasPrefix(p, "kretprobe_"):
			out[i] = progAttach{prog: p, kind: attachKretprobe, symbol: strings.TrimPrefix(p, "kretprobe_")}
		default:
			out[i] = progAttach{prog: p, kind: attachTracing}
		}
	}
	return out
}

// probeSet is a set of programs whose events are enabled and reported
// together, with its paths.
type probeSet struct {
	events []EventType
	paths  []pathSpec
	// addresses: every path finds counters or timers by kernel addresses
	// from /proc/kallsyms, which shows zeros to a reader without
	// CAP_SYSLOG (privileges.go).
	addresses bool
}

type pathSpec struct {
	path  ProbePath
	hooks string // what --list-probes prints
	progs []progAttach
	// requires, if set, says why this kernel cannot use the path before
	// anything is loaded (nil: try it).
	requires func(*kernelFacts) error
	// enable: the bits of hooks_on (enum shared_hook) the path turns on in
	// the programs it shares with other detectors.
	enable uint32
	// baselines: the path judges by how a CPU's SNMP counters moved, and
	// needs a baseline of every CPU's counters when attached
	// (mib_baseline.go).
	baselines bool
}

// The programs on a send's return, a TCP state change, a timer's arming and
// a dropped skb run all the time on a busy host, so the detectors that need
// them share one program per hook, each turning on its bit once its path is
// attached. A shared program appears in several paths under the same name;
// the loader attaches it once.
const (
	hookEAGAIN         = uint32(tcptraceSharedHookHOOK_SEND_EAGAIN)
	hookWait           = uint32(tcptraceSharedHookHOOK_SEND_WAIT)
	hookNagle          = uint32(tcptraceSharedHookHOOK_NAGLE)
	hookOwners         = uint32(tcptraceSharedHookHOOK_OWNERS)
	hookConnect        = uint32(tcptraceSharedHookHOOK_CONNECT)
	hookPorts          = uint32(tcptraceSharedHookHOOK_PORTS)
	hookTimewait       = uint32(tcptraceSharedHookHOOK_TIMEWAIT)
	hookDelack         = uint32(tcptraceSharedHookHOOK_DELACK)
	hookRetransmit     = uint32(tcptraceSharedHookHOOK_RETRANSMIT)
	hookSynRtx         = uint32(tcptraceSharedHookHOOK_SYN_RTX)
	hookRTOStall       = uint32(tcptraceSharedHookHOOK_RTO_STALL)
	hookListenOverflow = uint32(tcptraceSharedHookHOOK_LISTEN_OVERFLOW)
	hookPaws           = uint32(tcptraceSharedHookHOOK_PAWS)
)
