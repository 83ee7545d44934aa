package tracer

import (
	"fmt"
	"strings"
	"time"
)

// The nagle detector (bpf/nagle.bpf.c): Nagle's algorithm held a small write
// behind an unacknowledged small segment (nagle_stall), until the peer's
// delayed-ACK timer released it (nagle_delack_stall).
const (
	NagleStall       EventType = EventType(tcptraceEventTypeEVENT_NAGLE_STALL)
	NagleDelackStall EventType = EventType(tcptraceEventTypeEVENT_NAGLE_DELACK_STALL)
)

const (
	reasonUnackedSmall   Reason = "unacked_small_segment"
	reasonPeerDelayedACK Reason = "peer_delayed_ack"
)

var nagleDetector = &detector{
	name:    "nagle",
	events:  []eventSpec{{NagleStall, "nagle_stall"}, {NagleDelackStall, "nagle_delack_stall"}},
	reasons: []Reason{reasonUnackedSmall, reasonPeerDelayedACK},
	probes: []probeSet{
		{
			events: []EventType{NagleStall, NagleDelackStall},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/sock_send_length (6.3+) + tp_btf/tcp_probe",
					progs: attach("tp_sock_send_length", "tp_tcp_probe"), enable: hookNagle},
				{path: PathFentry, hooks: "fexit/tcp_sendmsg + tp_btf/tcp_probe",
					progs: attach("fexit_tcp_sendmsg", "tp_tcp_probe"), enable: hookNagle},
				{path: PathKprobe, hooks: "kprobe+kretprobe/tcp_sendmsg + tp_btf/tcp_probe",
					progs: attach("kprobe_tcp_sendmsg", "kretprobe_tcp_sendmsg", "tp_tcp_probe"), enable: hookNagle},
			},
		},
	},
	// A stall is released in softirq context, by the peer's ACK.
	needs: needs{owners: true},
	durations: []durationSpec{{
		name: "nagle_stall", events: []EventType{NagleStall, NagleDelackStall},
		help: "How long Nagle held written data behind an unacknowledged small segment.",
		sum:  func(e *Event) (time.Duration, bool) { return e.tally.wait, true },
	}},
	settings: func(wanted []EventType, v *tcptraceVariableSpecs) []setting {
		return []setting{
			// The delayed-ACK programs record each firing for the peer
			// only when a nagle_delack_stall may read it.
			{v.CfgRecordPeer, boolByte(containsEvent(wanted, NagleDelackStall))},
			{v.CfgEmitNagle, boolByte(containsEvent(wanted, NagleStall))},
			{v.CfgEmitNagleDelack, boolByte(containsEvent(wanted, NagleDelackStall))},
		}
	},
	// nagle_delack_stall is proven by the peer's delayed-ACK firing, which
	// the delack detector records.
	companions: map[EventType]EventType{NagleDelackStall: DelayedACK},
	decode:     decodeNagle,
	explain: func(e Event, t tally) string {
		return explainNagle(e.Type, &e.nagle, &e.snap, t)
	},
}

// nagleState is the sender's side of a Nagle hold and, for
// nagle_delack_stall, the peer's delayed ACK that released it.
type nagleState struct {
	heldBytes     uint32 // written and held back
	smallInflight uint32 // unacknowledged bytes (the small segment) when the write was held
	ackPayload    uint32 // payload of the segment that released the data; 0 = a pure ACK

	peerPID         uint32
	peerComm        string
	peerOwnerKnown  bool
	peerHeld        time.Duration
	peerATO         time.Duration
	peerATOJiffies  uint32
	peerInteractive bool
}

func newNagleState(r *tcptraceAckSnapshot, hz uint64) nagleState {
	n := nagleState{
		heldBytes:       r.HeldBytes,
		smallInflight:   r.SmallInflight,
		ackPayload:      r.AckPayload,
		peerPID:         r.PeerPid,
		peerComm:        cString(r.PeerComm[:]),
		peerOwnerKnown:  r.PeerOwnerKnown != 0,
		peerHeld:        time.Duration(r.PeerHeldNs),
		peerATOJiffies:  r.PeerAto,
		peerInteractive: r.PeerInPingpong != 0,
	}
	if hz > 0 {
		n.peerATO = jiffies(r.PeerAto, hz)
	}
	return n
}

func decodeNagle(d *decoder, r *tcptraceEvent, t tally) Event {
	e := d.connEvent(r, t)
	e.nagle = newNagleState(&r.A, d.hz)
	e.Reason = reasonUnackedSmall
	if e.Type == NagleDelackStall {
		e.Reason = reasonPeerDelayedACK
	}
	e.Details = nagleDetails(e.Type, &e.nagle, &e.snap, r, t)
	return e
}

// explainNagle: one sentence, every figure of it among the details.
func explainNagle(t EventType, a *nagleState, s *snapshot, n tally) string {
	var b strings.Builder
	switch t {
	case NagleStall:
		fmt.Fprintf(&b, "Nagle held %d bytes %s behind an unacknowledged small segment (%d bytes in flight, TCP_NODELAY off)",
			a.heldBytes, heldPhrase(n.wait, n.maxWait, n.count), a.smallInflight)
		if a.ackPayload == 0 {
			fmt.Fprintf(&b, "; released by a pure ACK from the peer (srtt %s)", dur(s.SRTT))
			if n.count <= 1 && s.SRTT > 0 && n.wait > s.SRTT+10*time.Millisecond {
				fmt.Fprintf(&b, ", %s more than the round trip: unless a segment was lost, the peer held its ACK (a Linux delayed-ACK timer holds it 40 ms or more)", dur(n.wait-s.SRTT))
			}
		} else {
			fmt.Fprintf(&b, "; released by the peer's reply (%d bytes, srtt %s)", a.ackPayload, dur(s.SRTT))
		}
		b.WriteString(": write each message in one call (writev or one buffer), or set TCP_NODELAY on this socket")
	case NagleDelackStall:
		fmt.Fprintf(&b, "Nagle held %d bytes %s behind an unacknowledged small segment (%d bytes, TCP_NODELAY off) until the peer's delayed-ACK timer released them",
			a.heldBytes, heldPhrase(n.wait, n.maxWait, n.count), a.smallInflight)
		b.WriteString(" (")
		if a.peerOwnerKnown {
			fmt.Fprintf(&b, "peer pid %d %s, ", a.peerPID, a.peerComm)
		}
		if a.peerHeld > 0 {
			fmt.Fprintf(&b, "ACK held %s, ", dur(a.peerHeld))
		}
		if s.HZKnown {
			fmt.Fprintf(&b, "ato %s, ", dur(a.peerATO))
		}
		if a.peerInteractive {
			b.WriteString("interactive/pingpong mode)")
		} else {
			b.WriteString("not interactive)")
		}
		b.WriteString(": the classic Nagle + delayed-ACK stall; write header and body in one call (writev or one buffer), or set TCP_NODELAY on the sender, or TCP_QUICKACK on the receiver after each of its writes")
	}
	return b.String()
}

func nagleDetails(t EventType, a *nagleState, s *snapshot, r *tcptraceEvent, n tally) map[string]any {
	d := heldDetails(s, r)
	d["stall_ms"] = ms(n.wait)
	d["max_stall_ms"] = ms(n.maxWait)
	d["held_bytes"] = a.heldBytes
	d["small_segment_inflight_bytes"] = a.smallInflight
	d["release_ack_payload_bytes"] = a.ackPayload
	d["mss_bytes"] = s.MSS
	d["nodelay"] = s.NoDelay
	d["cork"] = s.Cork
	if t == NagleDelackStall {
		d["peer_owner_known"] = a.peerOwnerKnown
		if a.peerOwnerKnown {
			d["peer_pid"] = a.peerPID
			d["peer_comm"] = a.peerComm
		}
		d["peer_interactive"] = a.peerInteractive
		d["peer_ato_jiffies"] = a.peerATOJiffies
		optMs(d, "peer_ato_ms", a.peerATO, s.HZKnown)
		optMs(d, "peer_held_ms", a.peerHeld, a.peerHeld > 0)
	}
	return d
}
