package tracer

import (
	"fmt"
	"strings"
	"time"
)

// ACKState is what a delayed_ack, nagle_stall or nagle_delack_stall line
// read from the kernel (bpf/delack.bpf.c, bpf/nagle.bpf.c).
type ACKState struct {
	// delayed_ack: the receiver's side.
	Held        time.Duration // from the timer's arming to its firing
	HeldKnown   bool          // the arming was seen (not before tcptrace started)
	ATOJiffies  uint32
	ATO         time.Duration // zero when HZ is unknown
	Pingpong    uint8         // icsk_ack.pingpong before the firing
	Interactive bool          // the kernel treated the connection as interactive (pingpong mode)
	QuickLeft   uint8         // quick ACKs left
	Unacked     uint32        // bytes received and not yet acknowledged
	RcvMSS      uint32

	// nagle_stall: the sender's side.
	HeldBytes     uint32 // written and held back
	SmallInflight uint32 // unacknowledged bytes (the small segment) when the write was held
	ACKPayload    uint32 // payload of the segment that released the data; 0 = a pure ACK

	// nagle_delack_stall: the peer's delayed ACK that released the data.
	PeerPID         uint32
	PeerComm        string
	PeerOwnerKnown  bool
	PeerHeld        time.Duration
	PeerATO         time.Duration
	PeerATOJiffies  uint32
	PeerInteractive bool
	OwnerKnown      bool
}

func newACKState(r *tcptraceAckSnapshot, hz uint64) ACKState {
	a := ACKState{
		Held:            time.Duration(r.HeldNs),
		HeldKnown:       r.HeldNs != 0,
		ATOJiffies:      r.Ato,
		Pingpong:        r.Pingpong,
		Interactive:     r.InPingpong != 0,
		QuickLeft:       r.Quick,
		Unacked:         r.UnackedBytes,
		RcvMSS:          r.RcvMss,
		HeldBytes:       r.HeldBytes,
		SmallInflight:   r.SmallInflight,
		ACKPayload:      r.AckPayload,
		PeerPID:         r.PeerPid,
		PeerComm:        cString(r.PeerComm[:]),
		PeerOwnerKnown:  r.PeerOwnerKnown != 0,
		PeerHeld:        time.Duration(r.PeerHeldNs),
		PeerATOJiffies:  r.PeerAto,
		PeerInteractive: r.PeerInPingpong != 0,
		OwnerKnown:      r.OwnerKnown != 0,
	}
	if hz > 0 {
		a.ATO = time.Duration(r.Ato) * time.Second / time.Duration(hz)
		a.PeerATO = time.Duration(r.PeerAto) * time.Second / time.Duration(hz)
	}
	return a
}

// classifyDelayedACK: why the receiver held its ACK. In pingpong mode the
// kernel expects to piggyback the ACK on a reply; out of it, an ACK is held
// only when no quick ACKs are left and less than two full segments arrived
// (__tcp_ack_snd_check()).
func classifyDelayedACK(a *ACKState) Reason {
	switch {
	case a.Interactive:
		return ReasonPingpong
	case a.QuickLeft == 0:
		return ReasonQuickackExhausted
	}
	return ReasonOther
}

func (d *decoder) decodeACK(r *tcptraceEvent, t tally) Event {
	e := d.connEvent(r, t)
	s, a := e.Snapshot, newACKState(&r.A, d.hz)
	e.ACK = a
	if e.Type == DelayedACK && !a.OwnerKnown {
		e.PID, e.TID, e.Comm = 0, 0, ""
		if d.owners != nil {
			e.PID, e.Comm = d.owners.lookup(r.S.Ino)
		}
	}
	switch e.Type {
	case DelayedACK:
		e.Reason = classifyDelayedACK(&a)
	case NagleStall:
		e.Reason = ReasonUnackedSmall
	case NagleDelackStall:
		e.Reason = ReasonPeerDelayedACK
	}
	e.Explanation = explainACK(e.Type, &a, &s, t)
	e.Details = ackDetails(e.Type, &a, &s, r, t)
	return e
}

// heldPhrase: "for 40 ms", or for an aggregated line "for 40 ms on average
// over 12 (longest 44 ms)".
func heldPhrase(total, longest time.Duration, n uint64) string {
	if n <= 1 {
		return "for " + dur(total)
	}
	return fmt.Sprintf("for %s on average over %d (longest %s)", dur(total/time.Duration(n)), n, dur(longest))
}

// explainACK: one sentence, every figure of it among the details.
func explainACK(t EventType, a *ACKState, s *Snapshot, n tally) string {
	var b strings.Builder
	switch t {
	case DelayedACK:
		if n.count > 1 {
			fmt.Fprintf(&b, "%d delayed ACKs", n.count)
		} else {
			b.WriteString("delayed ACK")
		}
		if a.HeldKnown {
			fmt.Fprintf(&b, " held %s", heldPhrase(n.wait, n.maxWait, n.count))
		}
		b.WriteString(" by the receiver's timer (")
		if s.HZKnown {
			fmt.Fprintf(&b, "ato estimate %s, ", dur(a.ATO))
		}
		if a.Interactive {
			b.WriteString("interactive/pingpong mode")
		} else {
			fmt.Fprintf(&b, "not interactive, %d quick ACKs left", a.QuickLeft)
		}
		fmt.Fprintf(&b, ", %d bytes unacknowledged)", a.Unacked)
		b.WriteString("; a peer that waits for this ACK before sending more (Nagle holding a second small write, a full window) stalls as long: fix the peer's writes (one writev, or TCP_NODELAY there), or set TCP_QUICKACK on this socket again after each write (sending re-enters pingpong mode)")
	case NagleStall:
		fmt.Fprintf(&b, "Nagle held %d bytes %s behind an unacknowledged small segment (%d bytes in flight, TCP_NODELAY off)",
			a.HeldBytes, heldPhrase(n.wait, n.maxWait, n.count), a.SmallInflight)
		if a.ACKPayload == 0 {
			fmt.Fprintf(&b, "; released by a pure ACK from the peer (srtt %s)", dur(s.SRTT))
			if n.count <= 1 && s.SRTT > 0 && n.wait > s.SRTT+10*time.Millisecond {
				fmt.Fprintf(&b, ", %s more than the round trip: unless a segment was lost, the peer held its ACK (a Linux delayed-ACK timer holds it 40 ms or more)", dur(n.wait-s.SRTT))
			}
		} else {
			fmt.Fprintf(&b, "; released by the peer's reply (%d bytes, srtt %s)", a.ACKPayload, dur(s.SRTT))
		}
		b.WriteString(": write each message in one call (writev or one buffer), or set TCP_NODELAY on this socket")
	case NagleDelackStall:
		fmt.Fprintf(&b, "Nagle held %d bytes %s behind an unacknowledged small segment (%d bytes, TCP_NODELAY off) until the peer's delayed-ACK timer released them",
			a.HeldBytes, heldPhrase(n.wait, n.maxWait, n.count), a.SmallInflight)
		b.WriteString(" (")
		if a.PeerOwnerKnown {
			fmt.Fprintf(&b, "peer pid %d %s, ", a.PeerPID, a.PeerComm)
		}
		if a.PeerHeld > 0 {
			fmt.Fprintf(&b, "ACK held %s, ", dur(a.PeerHeld))
		}
		if s.HZKnown {
			fmt.Fprintf(&b, "ato %s, ", dur(a.PeerATO))
		}
		if a.PeerInteractive {
			b.WriteString("interactive/pingpong mode)")
		} else {
			b.WriteString("not interactive)")
		}
		b.WriteString(": the classic Nagle + delayed-ACK stall; write header and body in one call (writev or one buffer), or set TCP_NODELAY on the sender, or TCP_QUICKACK on the receiver after each of its writes")
	}
	return b.String()
}

func ackDetails(t EventType, a *ACKState, s *Snapshot, r *tcptraceEvent, n tally) map[string]any {
	// Sized for every key a line can carry: a map that grows while it is
	// filled costs more than the rest of the line.
	d := make(map[string]any, detailsCap)
	d["probe"] = ProbePath(r.Path).String()
	d["state"] = s.State
	d["srtt_us"] = s.SRTT.Microseconds()
	d["socket_inode"] = r.S.Ino
	switch t {
	case DelayedACK:
		d["owner_known"] = a.OwnerKnown
		d["pingpong"] = a.Pingpong
		d["interactive"] = a.Interactive
		d["quick_acks_left"] = a.QuickLeft
		d["unacked_bytes"] = a.Unacked
		d["rcv_mss_bytes"] = a.RcvMSS
		d["ato_jiffies"] = a.ATOJiffies
		if s.HZKnown {
			d["ato_ms"] = ms(a.ATO)
		}
		if a.HeldKnown {
			d["held_ms"] = ms(n.wait)
			d["max_held_ms"] = ms(n.maxWait)
		}
	case NagleStall, NagleDelackStall:
		d["stall_ms"] = ms(n.wait)
		d["max_stall_ms"] = ms(n.maxWait)
		d["held_bytes"] = a.HeldBytes
		d["small_segment_inflight_bytes"] = a.SmallInflight
		d["release_ack_payload_bytes"] = a.ACKPayload
		d["mss_bytes"] = s.MSS
		d["nodelay"] = s.NoDelay
		d["cork"] = s.Cork
		if t == NagleDelackStall {
			d["peer_owner_known"] = a.PeerOwnerKnown
			if a.PeerOwnerKnown {
				d["peer_pid"] = a.PeerPID
				d["peer_comm"] = a.PeerComm
			}
			d["peer_interactive"] = a.PeerInteractive
			d["peer_ato_jiffies"] = a.PeerATOJiffies
			if s.HZKnown {
				d["peer_ato_ms"] = ms(a.PeerATO)
			}
			if a.PeerHeld > 0 {
				d["peer_held_ms"] = ms(a.PeerHeld)
			}
		}
	}
	return d
}
