package tracer

import (
	"fmt"
	"net/netip"
	"time"
)

// EventType names what happened; its String is the `event` field of the JSON
// contract and the name --events takes.
type EventType uint8

const (
	SendEAGAIN       EventType = EventType(tcptraceEventTypeEVENT_SEND_EAGAIN)
	SendBlocked      EventType = EventType(tcptraceEventTypeEVENT_SEND_BLOCKED)
	SynDrop          EventType = EventType(tcptraceEventTypeEVENT_SYN_DROP)
	SynCookie        EventType = EventType(tcptraceEventTypeEVENT_SYN_COOKIE)
	ListenOverflow   EventType = EventType(tcptraceEventTypeEVENT_LISTEN_OVERFLOW)
	SynackRetransmit EventType = EventType(tcptraceEventTypeEVENT_SYNACK_RETRANSMIT)
	DelayedACK       EventType = EventType(tcptraceEventTypeEVENT_DELAYED_ACK)
	NagleStall       EventType = EventType(tcptraceEventTypeEVENT_NAGLE_STALL)
	NagleDelackStall EventType = EventType(tcptraceEventTypeEVENT_NAGLE_DELACK_STALL)

	// Connection set-up and teardown (connect.go).
	SynRetransmit    EventType = EventType(tcptraceEventTypeEVENT_SYN_RETRANSMIT)
	ConnectTimeout   EventType = EventType(tcptraceEventTypeEVENT_CONNECT_TIMEOUT)
	ConnectRefused   EventType = EventType(tcptraceEventTypeEVENT_CONNECT_REFUSED)
	PortExhaustion   EventType = EventType(tcptraceEventTypeEVENT_PORT_EXHAUSTION)
	TimewaitOverflow EventType = EventType(tcptraceEventTypeEVENT_TIMEWAIT_OVERFLOW)
	PawsReject       EventType = EventType(tcptraceEventTypeEVENT_PAWS_REJECT)
	Reset            EventType = EventType(tcptraceEventTypeEVENT_RESET)
)

var eventNames = map[EventType]string{
	SendEAGAIN:       "send_eagain",
	SendBlocked:      "send_blocked",
	SynDrop:          "syn_drop",
	SynCookie:        "syn_cookie",
	ListenOverflow:   "listen_overflow",
	SynackRetransmit: "synack_retransmit",
	DelayedACK:       "delayed_ack",
	NagleStall:       "nagle_stall",
	NagleDelackStall: "nagle_delack_stall",
	SynRetransmit:    "syn_retransmit",
	ConnectTimeout:   "connect_timeout",
	ConnectRefused:   "connect_refused",
	PortExhaustion:   "port_exhaustion",
	TimewaitOverflow: "timewait_overflow",
	PawsReject:       "paws_reject",
	Reset:            "reset",
}

// isListenerEvent: the event is about a listener and one client, seen in
// softirq or timer context, and its pid is the listener's owner.
func (t EventType) isListenerEvent() bool {
	return t >= SynDrop && t <= SynackRetransmit
}

// isAckEvent: a delayed ACK or a Nagle hold (tracer/ack.go).
func (t EventType) isAckEvent() bool {
	return t >= DelayedACK && t <= NagleDelackStall
}

func (t EventType) String() string {
	if n, ok := eventNames[t]; ok {
		return n
	}
	return fmt.Sprintf("event_%d", uint8(t))
}

// ParseEventType maps a name given to --events back to its type.
func ParseEventType(name string) (EventType, error) {
	for t, n := range eventNames {
		if n == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown event %q (known: %s)", name, eventList())
}

// AllEventTypes lists every event in a stable order.
func AllEventTypes() []EventType {
	return []EventType{SendEAGAIN, SendBlocked, SynDrop, SynCookie, ListenOverflow, SynackRetransmit,
		DelayedACK, NagleStall, NagleDelackStall,
		SynRetransmit, ConnectTimeout, ConnectRefused, PortExhaustion, TimewaitOverflow, PawsReject, Reset}
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

const (
	ReasonPeerZeroWindow        Reason = "peer_zero_window"
	ReasonUnackedRetransmitting Reason = "unacked_retransmitting"
	ReasonCwndLimited           Reason = "cwnd_limited"
	ReasonSndbufLimited         Reason = "sndbuf_limited"
	ReasonMemoryPressure        Reason = "memory_pressure"
	ReasonNotsentLowat          Reason = "notsent_lowat"
	ReasonUnknown               Reason = "unknown"

	// Listener events.
	ReasonAcceptQueueFull  Reason = "accept_queue_full"
	ReasonSynQueueFull     Reason = "syn_queue_full"
	ReasonUnprovenPeer     Reason = "unproven_peer"
	ReasonOther            Reason = "other"
	ReasonSyncookiesAlways Reason = "syncookies_always"
	ReasonNoFinalACK       Reason = "no_final_ack"

	// Delayed ACKs and Nagle.
	ReasonPingpong          Reason = "pingpong"           // the receiver judged the connection interactive
	ReasonQuickackExhausted Reason = "quickack_exhausted" // no quick ACKs left, less than two segments to ACK
	ReasonUnackedSmall      Reason = "unacked_small_segment"
	ReasonPeerDelayedACK    Reason = "peer_delayed_ack"
)

var listenReasons = map[uint8]Reason{
	uint8(tcptraceListenReasonLISTEN_ACCEPT_QUEUE_FULL): ReasonAcceptQueueFull,
	uint8(tcptraceListenReasonLISTEN_SYN_QUEUE_FULL):    ReasonSynQueueFull,
	uint8(tcptraceListenReasonLISTEN_UNPROVEN_PEER):     ReasonUnprovenPeer,
	uint8(tcptraceListenReasonLISTEN_OTHER):             ReasonOther,
	uint8(tcptraceListenReasonLISTEN_SYNCOOKIES_ALWAYS): ReasonSyncookiesAlways,
	uint8(tcptraceListenReasonLISTEN_NO_FINAL_ACK):      ReasonNoFinalACK,
}

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
	TID    uint32
	Comm   string
	Family int // 4 or 6
	Local  netip.AddrPort
	Remote netip.AddrPort
	NetNS  uint32
	// Count is how many occurrences this line stands for (at least 1): a
	// spinning sender's EAGAINs are summed per connection and interval.
	Count uint64
	// Path is the probe path that saw the event.
	Path        ProbePath
	Explanation string
	// Details holds every number read from the kernel, keyed with its unit
	// (sndbuf_bytes, rto_ms). Values are numbers, booleans or strings.
	Details map[string]any
	// Socket identifies the connection for the summary (kernel address of
	// the socket); it is not part of the output contract.
	Socket uint64
	// Snapshot is the socket state behind Details and Explanation (send,
	// delayed-ACK and Nagle events); Listener the listener's (listener events).
	Snapshot Snapshot
	Listener ListenerState
	// ACK is the delayed-ACK or Nagle state (those events).
	ACK ACKState
	// Conn is the connection's state at a set-up or teardown event.
	Conn ConnState
}
