package tracer

import (
	"fmt"
	"strings"
	"time"
)

// The delack detector (bpf/delack.bpf.c): a receiver's delayed-ACK timer
// fired, so the ACK waited for it instead of leaving with data or at once.
const DelayedACK EventType = EventType(tcptraceEventTypeEVENT_DELAYED_ACK)

// Why the receiver held its ACK (classifyDelayedACK).
const (
	reasonPingpong          Reason = "pingpong"           // the receiver judged the connection interactive
	reasonQuickackExhausted Reason = "quickack_exhausted" // no quick ACKs left, less than two segments to ACK
)

var delackDetector = &detector{
	name:    "delack",
	events:  []eventSpec{{DelayedACK, "delayed_ack"}},
	reasons: []Reason{reasonPingpong, reasonQuickackExhausted, reasonOther},
	probes: []probeSet{
		{
			events:    []EventType{DelayedACK},
			addresses: true,
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/timer_start, timer_expire_entry, timer_expire_exit (callback tcp_delack_timer), per-CPU DelayedACKs",
					progs: attach("tp_timer_start", "tp_timer_expire_entry", "tp_timer_expire_exit"), requires: needDelackTimer, enable: hookDelack},
				{path: PathFentry, hooks: "fentry/tcp_send_delayed_ack, fentry+fexit/tcp_delack_timer_handler, per-CPU DelayedACKs",
					progs: attach("fentry_tcp_send_delayed_ack", "fentry_tcp_delack_timer_handler", "fexit_tcp_delack_timer_handler"), requires: needCounters},
				{path: PathKprobe, hooks: "kprobe/tcp_send_delayed_ack, kprobe+kretprobe/tcp_delack_timer_handler, per-CPU DelayedACKs",
					progs: attach("kprobe_tcp_send_delayed_ack", "kprobe_tcp_delack_timer_handler", "kretprobe_tcp_delack_timer_handler"), requires: needCounters},
			},
		},
	},
	// The firing is in softirq or timer context: the owner comes from the
	// socket. The timer's callback address and the per-CPU DelayedACKs
	// counter are kernel facts.
	needs: needs{owners: true, kernelFacts: true},
	// The programs also run for nagle_delack_stall (they record each
	// firing for the peer): emit lines only when asked.
	settings: func(wanted []EventType, v *tcptraceVariableSpecs) []setting {
		return []setting{{v.CfgEmitDelack, boolByte(containsEvent(wanted, DelayedACK))}}
	},
	// tcp_delack_timer_handler() counts LINUX_MIB_DELAYEDACKS once per ACK
	// it sends, and the detector reports exactly those firings.
	counters: []counterCheck{{terms: []countTerm{{event: DelayedACK}}, counter: "DelayedACKs", related: []string{"DelayedACKLocked"}}},
	durations: []durationSpec{{
		name: "delayed_ack_hold", events: []EventType{DelayedACK},
		help: "How long the receiver's delayed-ACK timer held an ACK, from its arming to its firing.",
		sum:  func(e *Event) (time.Duration, bool) { return e.tally.wait, e.delack.heldKnown },
	}},
	decode: decodeDelack,
	explain: func(e Event, t tally) string {
		return explainDelack(&e.delack, &e.snap, t)
	},
}

func needDelackTimer(f *kernelFacts) error {
	return needCountersAt(f, f.delackTimer, "tcp_delack_timer not found in /proc/kallsyms (needed to recognise the delayed-ACK timer among all timers)")
}

// delackState is the receiver's side of a delayed_ack line, read when its
// timer fired.
type delackState struct {
	held        time.Duration // from the timer's arming to its firing
	heldKnown   bool          // the arming was seen (not before tcptrace started)
	atoJiffies  uint32
	ato         time.Duration // zero when HZ is unknown
	pingpong    uint8         // icsk_ack.pingpong before the firing
	interactive bool          // the kernel treated the connection as interactive (pingpong mode)
	quickLeft   uint8         // quick ACKs left
	unacked     uint32        // bytes received and not yet acknowledged
	rcvMSS      uint32
	ownerKnown  bool
}

func newDelackState(r *tcptraceAckSnapshot, hz uint64) delackState {
	a := delackState{
		held:        time.Duration(r.HeldNs),
		heldKnown:   r.HeldNs != 0,
		atoJiffies:  r.Ato,
		pingpong:    r.Pingpong,
		interactive: r.InPingpong != 0,
		quickLeft:   r.Quick,
		unacked:     r.UnackedBytes,
		rcvMSS:      r.RcvMss,
		ownerKnown:  r.OwnerKnown != 0,
	}
	if hz > 0 {
		a.ato = jiffies(r.Ato, hz)
	}
	return a
}

// classifyDelayedACK: why the receiver held its ACK. In pingpong mode the
// kernel expects to piggyback the ACK on a reply; out of it, an ACK is held
// only when no quick ACKs are left and less than two full segments arrived
// (__tcp_ack_snd_check()).
func classifyDelayedACK(a *delackState) Reason {
	switch {
	case a.interactive:
		return reasonPingpong
	case a.quickLeft == 0:
		return reasonQuickackExhausted
	}
	return reasonOther
}

func decodeDelack(d *decoder, r *tcptraceEvent, t tally) Event {
	e := d.connEvent(r, t)
	e.delack = newDelackState(&r.A, d.hz)
	if !e.delack.ownerKnown {
		// The timer fired in another task's context.
		e.PID, e.Comm = 0, ""
		if d.owners != nil {
			d.ownerByInode(&e, r.S.Ino)
		}
	}
	e.Reason = classifyDelayedACK(&e.delack)
	e.Details = delackDetails(&e.delack, &e.snap, r, t)
	return e
}

// explainDelack: one sentence, every figure of it among the details.
func explainDelack(a *delackState, s *snapshot, n tally) string {
	var b strings.Builder
	if n.count > 1 {
		fmt.Fprintf(&b, "%d delayed ACKs", n.count)
	} else {
		b.WriteString("delayed ACK")
	}
	if a.heldKnown {
		fmt.Fprintf(&b, " held %s", heldPhrase(n.wait, n.maxWait, n.count))
	}
	b.WriteString(" by the receiver's timer (")
	if s.HZKnown {
		fmt.Fprintf(&b, "ato estimate %s, ", dur(a.ato))
	}
	if a.interactive {
		b.WriteString("interactive/pingpong mode")
	} else {
		fmt.Fprintf(&b, "not interactive, %d quick ACKs left", a.quickLeft)
	}
	fmt.Fprintf(&b, ", %d bytes unacknowledged)", a.unacked)
	b.WriteString("; a peer that waits for this ACK before sending more (Nagle holding a second small write, a full window) stalls as long: fix the peer's writes (one writev, or TCP_NODELAY there), or set TCP_QUICKACK on this socket again after each write (sending re-enters pingpong mode)")
	return b.String()
}

func delackDetails(a *delackState, s *snapshot, r *tcptraceEvent, n tally) map[string]any {
	d := heldDetails(s, r)
	d["owner_known"] = a.ownerKnown
	d["pingpong"] = a.pingpong
	d["interactive"] = a.interactive
	d["quick_acks_left"] = a.quickLeft
	d["unacked_bytes"] = a.unacked
	d["rcv_mss_bytes"] = a.rcvMSS
	d["ato_jiffies"] = a.atoJiffies
	optMs(d, "ato_ms", a.ato, s.HZKnown)
	if a.heldKnown {
		d["held_ms"] = ms(n.wait)
		d["max_held_ms"] = ms(n.maxWait)
	}
	return d
}

// heldDetails are the details of every line about something held back on
// a connection (delack and nagle), sized for every key such a line can
// carry: a map that grows while it is filled costs more than the rest of
// the line.
func heldDetails(s *snapshot, r *tcptraceEvent) map[string]any {
	d := make(map[string]any, detailsCap)
	d["probe"] = ProbePath(r.Path).String()
	d["state"] = s.State
	d["srtt_us"] = s.SRTT.Microseconds()
	d["socket_inode"] = r.S.Ino
	return d
}

// heldPhrase: "for 40 ms", or for an aggregated line "for 40 ms on average
// over 12 (longest 44 ms)".
func heldPhrase(total, longest time.Duration, n uint64) string {
	if n <= 1 {
		return "for " + dur(total)
	}
	return fmt.Sprintf("for %s on average over %d (longest %s)", dur(total/time.Duration(n)), n, dur(longest))
}
