package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// The paws detector (bpf/paws.bpf.c): a segment dropped by the PAWS
// timestamp check (RFC 7323), on a live connection or by a TIME_WAIT socket.
const PawsReject EventType = EventType(tcptraceEventTypeEVENT_PAWS_REJECT)

// The reasons, by the kernel's drop reason.
const (
	reasonPawsTimewait    Reason = "timewait_paws"
	reasonPawsEstablished Reason = "established_paws"
	reasonPawsOldAck      Reason = "old_ack"
	reasonPawsTSecr       Reason = "bad_tsecr"
)

var pawsReasonOf = map[string]Reason{
	"TCP_RFC7323_PAWS":     reasonPawsEstablished,
	"TCP_RFC7323_TW_PAWS":  reasonPawsTimewait,
	"TCP_RFC7323_PAWS_ACK": reasonPawsOldAck,
	"TCP_RFC7323_TSECR":    reasonPawsTSecr,
}

// pawsRecomputed is the drop_reason the BPF side gives a PAWS reject in
// TIME_WAIT that it recognised itself (PAWS_RECOMPUTED).
const pawsRecomputed = 0xffffffff

var pawsDetector = &detector{
	name:    "paws",
	events:  []eventSpec{{PawsReject, "paws_reject"}},
	reasons: []Reason{reasonPawsTimewait, reasonPawsEstablished, reasonPawsOldAck, reasonPawsTSecr, reasonUnknown},
	probes: []probeSet{
		{
			events: []EventType{PawsReject},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/kfree_skb, reasons TCP_RFC7323_* incl. TW_PAWS (6.16+)",
					progs: attach("tp_kfree_skb"), requires: needPaws(true, true), enable: hookPaws},
				{path: PathFentry, hooks: "fentry/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb with rx_sk (6.11-6.15)",
					progs: attach("fentry_tcp_timewait_state_process", "tp_kfree_skb"), requires: needTimewaitPaws(true, true), enable: hookPaws},
				{path: PathFentry, hooks: "fentry/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb (5.19-6.10)",
					progs: attach("fentry_tcp_timewait_state_process", "tp_paws_kfree_skb_nosk"), requires: needTimewaitPaws(true, false)},
				{path: PathFentry, hooks: "fentry/tcp_timewait_state_process (PAWS test applied; TIME_WAIT only: no drop reasons before 5.19)",
					progs: attach("fentry_tcp_timewait_state_process"), requires: needTimewaitPaws(false, false)},
				{path: PathKprobe, hooks: "kprobe/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb with rx_sk (6.11-6.15)",
					progs: attach("kprobe_tcp_timewait_state_process", "tp_kfree_skb"), requires: needTimewaitPaws(true, true), enable: hookPaws},
				{path: PathKprobe, hooks: "kprobe/tcp_timewait_state_process (PAWS test applied) + tp_btf/kfree_skb (5.19-6.10)",
					progs: attach("kprobe_tcp_timewait_state_process", "tp_paws_kfree_skb_nosk"), requires: needTimewaitPaws(true, false)},
				{path: PathKprobe, hooks: "kprobe/tcp_timewait_state_process (PAWS test applied; TIME_WAIT only: no drop reasons before 5.19)",
					progs: attach("kprobe_tcp_timewait_state_process"), requires: needTimewaitPaws(false, false)},
				{path: PathTracepoint, hooks: "tp_btf/kfree_skb with rx_sk, reasons TCP_RFC7323_* (6.11-6.15: not in TIME_WAIT)",
					progs: attach("tp_kfree_skb"), requires: needPaws(false, true), enable: hookPaws},
				{path: PathTracepoint, hooks: "tp_btf/kfree_skb, reason TCP_RFC7323_PAWS (5.19-6.10: not in TIME_WAIT)",
					progs: attach("tp_paws_kfree_skb_nosk"), requires: needPaws(false, false)},
			},
		},
	},
	needs:   needs{owners: true, connFacts: true},
	decode:  decodePaws,
	explain: func(e Event, t tally) string { return explainPaws(&e.conn, e.Remote, t.count) },
}

// needPaws: the full tracepoint path needs TIME_WAIT's own reason (6.16+);
// the partial ones see PAWS on established and SYN_RECV sockets only.
func needPaws(twPaws, rxSk bool) func(*kernelFacts) error {
	return func(k *kernelFacts) error {
		f, err := connFactsOf(k)
		if err != nil {
			return err
		}
		if len(f.pawsReasons) == 0 {
			return errors.New("the kernel has no drop reason SKB_DROP_REASON_TCP_RFC7323_PAWS (added in 5.19)")
		}
		if twPaws && !f.hasPawsReason("TCP_RFC7323_TW_PAWS") {
			return errors.New("the kernel has no drop reason SKB_DROP_REASON_TCP_RFC7323_TW_PAWS (added in 6.16): PAWS rejects in TIME_WAIT are not visible")
		}
		return needPrototype(rxSk, func(f *connFacts) bool { return f.kfreeRxSk },
			"skb:kfree_skb does not pass rx_sk (added in 6.11)",
			"for kernels whose skb:kfree_skb has no rx_sk (before 6.11)")(k)
	}
}

// needTimewaitPaws: before 6.16 a PAWS reject in TIME_WAIT has no drop
// reason, and the fentry/kprobe paths apply the kernel's test themselves;
// from 6.16 the tracepoint has it and these paths would count it twice.
// reasons: the path also takes the other rejects from skb:kfree_skb (5.19+),
// rxSk: with the 6.11+ prototype.
func needTimewaitPaws(reasons, rxSk bool) func(*kernelFacts) error {
	return func(k *kernelFacts) error {
		f, err := connFactsOf(k)
		if err != nil {
			return err
		}
		if f.hasPawsReason("TCP_RFC7323_TW_PAWS") {
			return errors.New("for kernels without the drop reason TCP_RFC7323_TW_PAWS (before 6.16): the tracepoint path sees every PAWS reject")
		}
		if !reasons {
			if len(f.pawsReasons) != 0 {
				return errors.New("for kernels without PAWS drop reasons (before 5.19)")
			}
			return nil
		}
		return needPaws(false, rxSk)(k)
	}
}

func decodePaws(dec *decoder, r *tcptraceEvent, t tally) Event {
	e := decodeConn(dec, r, t)
	c := &e.conn
	e.Reason = reasonUnknown
	if c.PawsRecomputed {
		e.Reason = reasonPawsTimewait
	} else if reason, ok := pawsReasonOf[c.DropReason]; ok {
		e.Reason = reason
	}
	d := e.Details
	d["drop_reason"] = c.DropReason
	if c.PawsRecomputed {
		d["drop_reason"] = "none (TIME_WAIT before 6.16: PAWS test applied by tcptrace)"
	}
	d["syn"] = c.SYN
	d["state"] = c.State
	d["seq"] = c.Seq
	if c.RFC1337Known {
		d["tcp_rfc1337"] = c.RFC1337
	}
	if c.TSSeen {
		d["tsval"] = c.TSval
		d["tsecr"] = c.TSecr
	}
	if c.TSRecentKnown {
		d["ts_recent"] = c.TSRecent
		if c.TSSeen {
			d["tsval_behind_by"] = int32(c.TSRecent - c.TSval)
		}
	}
	// A local client's syn_retransmit line names this reject as its cause.
	dec.fates.note(&e)
	return e
}

func explainPaws(c *connState, remote netip.AddrPort, count uint64) string {
	var b strings.Builder
	what := "segment"
	if c.SYN {
		what = "SYN"
	}
	fmt.Fprintf(&b, "%s from %s dropped by the PAWS timestamp check", what, remote)
	if c.DropReason != "" {
		fmt.Fprintf(&b, " (%s)", c.DropReason)
	}
	if count > 1 {
		fmt.Fprintf(&b, ", %d times", count)
	}
	if c.TSSeen && c.TSRecentKnown {
		fmt.Fprintf(&b, ": its timestamp %d is %d behind the %d this host last saw from that address and port", c.TSval, int32(c.TSRecent-c.TSval), c.TSRecent)
	}
	reason := c.DropReason
	if c.PawsRecomputed {
		reason = "TCP_RFC7323_TW_PAWS"
	}
	switch reason {
	case "TCP_RFC7323_TW_PAWS":
		b.WriteString("; the 4-tuple is still in TIME_WAIT here and the new SYN's clock is older: typical of several clients behind one NAT address, whose timestamp clocks differ, reusing a source port")
		if c.SYN && c.RFC1337Known {
			b.WriteString("; how long the client suffers: " + rfc1337Clause(c.RFC1337, "here"))
		} else {
			b.WriteString("; the client sees its connect() time out or stall")
		}
		b.WriteString("; fix it on the NAT (keep per-client source ports apart) or let clients close first so TIME_WAIT stays on their side; tcp_tw_recycle, which made this far worse, was removed in 4.12")
	case "TCP_RFC7323_TSECR":
		b.WriteString("; the final ACK echoed a timestamp this host never sent: a middlebox rewriting timestamps, or a spoofed or stale handshake")
	case "TCP_RFC7323_PAWS_ACK":
		b.WriteString("; an old duplicate ACK, harmless in small numbers; many point to a peer or middlebox resending stale segments")
	default:
		b.WriteString("; the peer's timestamp clock went backwards on a live connection: a NAT mixing several clients into one 4-tuple, a middlebox rewriting timestamps, or a peer that restarted; the segment is discarded and the peer retransmits in vain")
	}
	b.WriteString(".")
	return b.String()
}
