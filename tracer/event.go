package tracer

import (
	"fmt"
	"net/netip"
	"time"
)

// EventType names what happened; its String is the `event` field of the JSON
// contract and the name --events takes. Its values are the BPF side's enum
// event_type; each detector declares its own (tracer/<name>.go).
type EventType uint8

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("event_%d", uint8(t))
}

// ParseEventType maps a name given to --events back to its type.
func ParseEventType(name string) (EventType, error) {
	for _, d := range detectors {
		for _, e := range d.events {
			if e.name == name {
				return e.typ, nil
			}
		}
	}
	return 0, fmt.Errorf("unknown event %q (known: %s)", name, eventList())
}

// AllEventTypes lists every event, detector by detector.
func AllEventTypes() []EventType {
	var out []EventType
	for _, d := range detectors {
		for _, e := range d.events {
			out = append(out, e.typ)
		}
	}
	return out
}

func eventList() string {
	s := ""
	for i, t := range AllEventTypes() {
		if i > 0 {
			s += ", "
		}
		s += t.String()
	}
	return s
}

// Reason is the machine-readable cause of an event.
type Reason string

// Reasons more than one detector gives; each detector names its own
// beside its events.
const (
	reasonUnknown Reason = "unknown"
	reasonOther   Reason = "other"
)

// ProbePath says which kind of kernel hook produced an event.
type ProbePath uint8

const (
	PathTracepoint ProbePath = ProbePath(tcptraceProbePathPATH_TRACEPOINT)
	PathFentry     ProbePath = ProbePath(tcptraceProbePathPATH_FENTRY)
	PathKprobe     ProbePath = ProbePath(tcptraceProbePathPATH_KPROBE)
)

func (p ProbePath) String() string {
	switch p {
	case PathTracepoint:
		return "tracepoint"
	case PathFentry:
		return "fentry"
	case PathKprobe:
		return "kprobe"
	}
	return "none"
}

// ParseProbePath maps "tracepoint", "fentry" or "kprobe" to its path.
func ParseProbePath(s string) (ProbePath, error) {
	for _, p := range []ProbePath{PathTracepoint, PathFentry, PathKprobe} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("unknown probe path %q (known: tracepoint, fentry, kprobe)", s)
}

// Event is one output line: what the kernel did, to which connection and
// process, the numbers read, and what they mean.
type Event struct {
	Time   time.Time
	Type   EventType
	Reason Reason
	PID    uint32
	Comm   string
	Family int // 4 or 6
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	// Cgroup is the cgroup (v2) path of PID's task when the kernel
	// recorded it, and ContainerID and PodUID the container and pod that
	// path names (cgroups.go); empty when unknown.
	Cgroup      string
	ContainerID string
	PodUID      string
	// Container, Pod and PodNamespace are the container's name and its
	// pod's, from the runtime's labels where it answers (runtime.go).
	Container    string
	Pod          string
	PodNamespace string
	// Count is how many occurrences this line stands for (at least 1): a
	// spinning sender's EAGAINs are summed per connection and interval.
	Count uint64
	// Path is the probe path that saw the event.
	Path        ProbePath
	Explanation string
	// Details holds every number read from the kernel, keyed with its unit
	// (sndbuf_bytes, rto_ms). Values are numbers, booleans or strings.
	Details map[string]any

	// What the sentence is made from: the socket's snapshot (send, delack,
	// nagle), the listener's (listen), the delayed ACK's and the Nagle
	// hold's, the connection's (connect, ports, timewait, paws, reset).
	snap   snapshot
	listen listenState
	delack delackState
	nagle  nagleState
	conn   connState
	// retransmit: the retransmitted segment's numbers and the
	// connection's limits.
	retransmit retransmitState
	// inProgress: a send still blocked when the line was printed; the
	// summary counts the wait when it ends.
	inProgress bool
	// tally: the occurrences the line stands for, and their summed wait.
	tally tally
}
