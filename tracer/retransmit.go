package tracer

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// The retransmit detector (bpf/retransmit.bpf.c): segments a connection
// past its handshake sent again, by what sent them (retransmit), and data
// left waiting for the backed-off retransmission timer while the peer is
// heard (rto_stall).
const (
	Retransmit EventType = EventType(tcptraceEventTypeEVENT_RETRANSMIT)
	RTOStall   EventType = EventType(tcptraceEventTypeEVENT_RTO_STALL)
)

// The kinds, as bpf/retransmit.bpf.c tells them (enum rtx_kind, bpf/tcptrace.h).
const (
	reasonRtxTimeout   Reason = "timeout"
	reasonRtxLossProbe Reason = "loss_probe"
	reasonRtxFast      Reason = "fast"
	reasonRtxSlowStart Reason = "slow_start"
	reasonRtxOther     Reason = "other"
)

// rto_stall's lines (enum rto_stall_kind).
const (
	reasonRTOBackoff Reason = "rto_backoff" // the peer is heard; our data waits for the timer
	reasonRecovered  Reason = "recovered"   // the data was acknowledged again
)

// TCP_RTO_MIN: the base of a synchronized connection's give-up time
// (tcp_model_timeout() in tcp_write_timeout()).
const tcpRTOMin = 200 * time.Millisecond

// Each path's programs for retransmit lines; rto_stall adds the received
// segment (tcp:tcp_probe, in every supported kernel) and needs the same
// programs for the timeouts that open an RTO episode.
var retransmitPaths = []pathSpec{
	{path: PathTracepoint, hooks: "tp_btf/tcp_retransmit_skb (with err, 6.17+)",
		progs: attach("tp_tcp_retransmit_skb_err", "tp_inet_sock_set_state"), requires: needRetransmitErr(true), enable: hookRetransmit},
	{path: PathTracepoint, hooks: "tp_btf/tcp_retransmit_skb",
		progs: attach("tp_tcp_retransmit_skb", "tp_inet_sock_set_state"), requires: needRetransmitErr(false), enable: hookRetransmit},
	{path: PathFentry, hooks: "fexit/tcp_retransmit_skb + fentry+fexit/tcp_send_loss_probe + fexit/__tcp_retransmit_skb (in a loss probe)",
		progs: attach("fexit_tcp_retransmit_skb", "fentry_tcp_send_loss_probe", "fexit_tcp_send_loss_probe", "fexit_loss_probe_retransmit", "tp_inet_sock_set_state"), enable: hookRetransmit},
	{path: PathKprobe, hooks: "kprobe+kretprobe/tcp_retransmit_skb, tcp_send_loss_probe, __tcp_retransmit_skb (in a loss probe)",
		progs: append(attach("kprobe_tcp_retransmit_skb", "kretprobe_tcp_retransmit_skb", "kprobe_tcp_send_loss_probe", "kretprobe_tcp_send_loss_probe", "tp_inet_sock_set_state"),
			// Named apart: bpf2go would give kprobe___tcp_retransmit_skb and
			// kprobe_tcp_retransmit_skb the same Go name.
			progAttach{prog: "kprobe_loss_probe_retransmit", kind: attachKprobe, symbol: "__tcp_retransmit_skb"},
			progAttach{prog: "kretprobe_loss_probe_retransmit", kind: attachKretprobe, symbol: "__tcp_retransmit_skb"}), enable: hookRetransmit},
}

func rtoStallPaths() []pathSpec {
	out := make([]pathSpec, len(retransmitPaths))
	for i, p := range retransmitPaths {
		p.hooks += " + tp_btf/tcp_probe"
		p.progs = append(append([]progAttach(nil), p.progs...), attach("tp_tcp_probe")...)
		p.enable |= hookRTOStall
		out[i] = p
	}
	return out
}

var retransmitDetector = &detector{
	name:    "retransmit",
	events:  []eventSpec{{Retransmit, "retransmit"}, {RTOStall, "rto_stall"}},
	reasons: []Reason{reasonRtxTimeout, reasonRtxLossProbe, reasonRtxFast, reasonRtxSlowStart, reasonRtxOther, reasonRTOBackoff, reasonRecovered},
	probes: []probeSet{
		{events: []EventType{Retransmit}, paths: retransmitPaths},
		{events: []EventType{RTOStall}, paths: rtoStallPaths()},
	},
	// The RTO and the loss probe fire in timer context, fast retransmits
	// and the peer's segments in softirq: the owner comes from the socket.
	needs: needs{owners: true, connFacts: true},
	// RetransSegs counts every retransmitted segment, SYNs and SYN-ACKs
	// (TCPSynRetrans) included, on the line where the socket's
	// total_retrans grows. TCPRetransFail: transmits that failed after
	// counting (up to 6.16 they fire no tracepoint; their segments are
	// folded into the socket's next line, lost if it closes first).
	counters: []counterCheck{{terms: []countTerm{{event: Retransmit}}, counter: "RetransSegs", related: []string{"TCPRetransFail"}, minus: []string{"TCPSynRetrans"}}},
	settings: func(wanted []EventType, v *tcptraceVariableSpecs) []setting {
		// rto_stall alone runs the retransmit programs for its episodes
		// and prints no retransmit line.
		return []setting{{v.CfgEmitRetransmit, boolByte(containsEvent(wanted, Retransmit))}}
	},
	// One recovered line per stall, with its whole length when tcptrace
	// saw its first timeout.
	durations: []durationSpec{{
		name: "rto_stall", events: []EventType{RTOStall},
		help: "How long data waited for the retransmission timer in an RTO episode that ended with the data acknowledged.",
		sum: func(e *Event) (time.Duration, bool) {
			return e.retransmit.stall.Stall, e.Reason == reasonRecovered && e.retransmit.stall.StallKnown
		},
	}},
	decode: func(d *decoder, r *tcptraceEvent, t tally) Event {
		if EventType(r.Type) == RTOStall {
			return decodeRTOStall(d, r, t)
		}
		return decodeRetransmit(d, r, t)
	},
	explain: func(e Event, t tally) string {
		if e.Type == RTOStall {
			return explainRTOStall(e.Reason, &e.retransmit, &e.snap, t.count)
		}
		return explainRetransmit(e.Reason, &e.retransmit, &e.snap, t.count)
	},
}

// retransmitState is what a retransmit line is made of besides the socket's
// snapshot.
type retransmitState struct {
	Ssthresh    uint32
	RTTVar      time.Duration
	Retries2    uint8
	UserTimeout time.Duration
	// RTOMax: the ceiling of this socket's backoff, its TCP_RTO_MAX_MS
	// where the kernel has it (snapshot.RTOMaxSockopt), else the constant
	// TCP_RTO_MAX; 0: unknown (HZ unknown).
	RTOMax time.Duration
	// RTOMaxSysctl: the namespace's net.ipv4.tcp_rto_max_ms, where the
	// kernel has it (snapshot.RTOMaxSysctl).
	RTOMaxSysctl time.Duration
	// Tick: one jiffy (1/CONFIG_HZ); 0 when HZ is unknown.
	Tick time.Duration
	// GiveUp: how long after its first retransmission the connection is
	// aborted if nothing is acknowledged (TCP_USER_TIMEOUT, else
	// tcp_retries2 doublings from TCP_RTO_MIN); 0 when HZ is unknown.
	GiveUp      time.Duration
	TransmitErr int32
	OwnerKnown  bool
	stall       rtoStall
}

func rtxReason(kind uint8) Reason {
	switch kind {
	case uint8(tcptraceRtxKindRTX_TIMEOUT):
		return reasonRtxTimeout
	case uint8(tcptraceRtxKindRTX_LOSS_PROBE):
		return reasonRtxLossProbe
	case uint8(tcptraceRtxKindRTX_FAST):
		return reasonRtxFast
	case uint8(tcptraceRtxKindRTX_SLOW_START):
		return reasonRtxSlowStart
	}
	return reasonRtxOther
}

// decodeRtx is what retransmit and rto_stall lines share: the connection,
// its owner, its recovery and the settings that bound its backoff.
func decodeRtx(d *decoder, r *tcptraceEvent, t tally) (Event, map[string]any) {
	e := d.connEvent(r, t)
	x := retransmitState{
		Ssthresh:    r.X.Ssthresh,
		RTTVar:      time.Duration(r.X.RttvarUs>>2) * time.Microsecond,
		Retries2:    uint8(r.X.Retries2),
		UserTimeout: time.Duration(r.C.UserTimeoutMs) * time.Millisecond,
		OwnerKnown:  r.C.OwnerKnown != 0,
	}
	if !x.OwnerKnown {
		e.PID, e.Comm = 0, ""
		if d.owners != nil && r.S.Ino != 0 {
			d.ownerByInode(&e, r.S.Ino)
		}
	}
	if e.snap.RTOMaxSysctl {
		x.RTOMaxSysctl = time.Duration(r.X.RtoMaxSysctlMs) * time.Millisecond
	}
	if d.hz > 0 {
		x.Tick = time.Second / time.Duration(d.hz)
		x.RTOMax = tcpRTOMax
		if e.snap.RTOMaxSockopt && r.C.RtoMax != 0 {
			x.RTOMax = time.Duration(uint64(r.C.RtoMax) * uint64(time.Second) / d.hz)
		}
		x.GiveUp = x.UserTimeout
		if x.GiveUp == 0 {
			x.GiveUp = modelTimeoutFrom(int(x.Retries2), tcpRTOMin, x.RTOMax)
		}
	}
	e.retransmit = x
	s := &e.snap
	dt := make(map[string]any, detailsCap)
	dt["probe"] = e.Path.String()
	dt["owner_known"] = x.OwnerKnown
	dt["state"] = s.State
	dt["socket_inode"] = r.S.Ino
	dt["unacked_bytes"] = s.UnackedBytes
	dt["packets_out"] = s.PacketsOut
	dt["lost_packets"] = s.LostOut
	dt["sacked_packets"] = s.SackedOut
	dt["retrans_out_packets"] = s.RetransOut
	dt["total_retrans_packets"] = s.TotalRetrans
	dt["rto_retransmits"] = s.RTORetransmits
	dt["backoff"] = s.Backoff
	dt["cwnd_packets"] = s.Cwnd
	dt["ssthresh_packets"] = x.Ssthresh
	dt["ca_state"] = caStateName(s.CAState)
	dt["srtt_us"] = s.SRTT.Microseconds()
	dt["rttvar_us"] = x.RTTVar.Microseconds()
	dt["tcp_retries2"] = x.Retries2
	dt["user_timeout_ms"] = x.UserTimeout.Milliseconds()
	// Whether rto_max_ms is the socket's TCP_RTO_MAX_MS or the constant
	// TCP_RTO_MAX.
	dt["rto_max_settable"] = s.RTOMaxSockopt
	optMs(dt, "tcp_rto_max_ms", x.RTOMaxSysctl, s.RTOMaxSysctl)
	if s.HZKnown {
		dt["rto_ms"] = ms(s.RTO)
		dt["since_last_ack_ms"] = ms(s.SinceLastACK)
		dt["rto_max_ms"] = ms(x.RTOMax)
		dt["give_up_after_ms"] = ms(x.GiveUp)
	}
	return e, dt
}

func decodeRetransmit(d *decoder, r *tcptraceEvent, t tally) Event {
	e, dt := decodeRtx(d, r, t)
	e.Reason = rtxReason(r.X.Kind)
	e.retransmit.TransmitErr = r.X.Err
	// The line's segments are its count; its bytes, the sum the
	// aggregation keeps in the wait field (bpf/retransmit.bpf.c).
	dt["segments"] = t.count
	dt["bytes"] = uint64(t.wait)
	if r.X.Err != 0 {
		dt["transmit_error"] = transmitErrName(r.X.Err)
	}
	e.Details = dt
	return e
}

// TCP_INFINITE_SSTHRESH: the connection has not left its first slow start,
// or an undone recovery restored that.
func ssthreshText(n uint32) string {
	if n >= 0x7fffffff {
		return "no ssthresh yet"
	}
	return fmt.Sprintf("ssthresh %d", n)
}

// icsk_ca_state values (include/net/tcp.h, enum tcp_ca_state).
func caStateName(s uint8) string {
	switch s {
	case 0:
		return "open"
	case 1:
		return "disorder"
	case 2:
		return "cwr"
	case 3:
		return "recovery"
	case 4:
		return "loss"
	}
	return "unknown"
}

// peerHeardBeforeTimeout: an ACK came while the retransmission timer that
// just fired ran, and advanced nothing (one that did would have re-armed
// it). The timer was armed with this RTO (the handler doubles it after the
// retransmission) and fires no sooner than that after it was armed; with
// nothing from the peer since, the last ACK is about one RTO old, or up to
// an RTT less where tcp_rearm_rto() counted the RTO from the head
// segment's send time (after a loss probe or a RACK reorder timer,
// tcp_rto_delta_us()). rcv_tstamp and the timer count in jiffies, so the
// two can also differ by a tick or two either way. An ACK is the peer's
// only when it is younger than the RTO by more than both: srtt and three
// ticks.
func peerHeardBeforeTimeout(s *snapshot, tick time.Duration) bool {
	if !s.HZKnown || tick <= 0 {
		return false
	}
	return s.SinceLastACK+s.SRTT+3*tick < s.RTO
}

// rtoMaxKnobs names the settings of the RTO ceiling this kernel has
// (6.15+), "" where the ceiling is the constant TCP_RTO_MAX.
func rtoMaxKnobs(s *snapshot) string {
	switch {
	case s.RTOMaxSockopt && s.RTOMaxSysctl:
		return "TCP_RTO_MAX_MS per socket, net.ipv4.tcp_rto_max_ms per namespace"
	case s.RTOMaxSockopt:
		return "TCP_RTO_MAX_MS per socket"
	case s.RTOMaxSysctl:
		return "net.ipv4.tcp_rto_max_ms per namespace"
	}
	return ""
}

func explainRetransmit(kind Reason, x *retransmitState, s *snapshot, count uint64) string {
	var b strings.Builder
	segs := "1 segment"
	if count != 1 {
		segs = fmt.Sprintf("%d segments", count)
	}
	switch kind {
	case reasonRtxTimeout:
		fmt.Fprintf(&b, "%s retransmitted because the retransmission timer fired", segs)
		heard := peerHeardBeforeTimeout(s, x.Tick)
		switch {
		case heard:
			fmt.Fprintf(&b, " (RTO %s, timeout %d in a row, backoff %d); %d bytes unacknowledged: the peer is heard (an ACK %s ago) but acknowledges none of them, so they waited for the timer",
				dur(s.RTO), s.RTORetransmits, s.Backoff, s.UnackedBytes, dur(s.SinceLastACK))
		case s.HZKnown:
			fmt.Fprintf(&b, " with no ACK for %s (RTO %s, timeout %d in a row, backoff %d); %d bytes unacknowledged: nothing from the peer acknowledges them, so the path or the peer is silent",
				dur(s.SinceLastACK), dur(s.RTO), s.RTORetransmits, s.Backoff, s.UnackedBytes)
		default:
			fmt.Fprintf(&b, " (timeout %d in a row, backoff %d); %d bytes unacknowledged", s.RTORetransmits, s.Backoff, s.UnackedBytes)
		}
		b.WriteString("; each timeout doubles the next")
		if x.RTOMax > 0 {
			fmt.Fprintf(&b, " up to %s", dur(x.RTOMax))
			if !s.RTOMaxSockopt && !s.RTOMaxSysctl {
				b.WriteString(" (a ceiling fixed on this kernel)")
			}
		}
		if x.GiveUp > 0 {
			if x.UserTimeout > 0 {
				fmt.Fprintf(&b, ", and the connection is aborted %s after its first unanswered retransmission (TCP_USER_TIMEOUT)", dur(x.GiveUp))
			} else {
				fmt.Fprintf(&b, ", and the connection is aborted about %s after its first unanswered retransmission (net.ipv4.tcp_retries2 %d)", dur(x.GiveUp), x.Retries2)
			}
		}
		if x.UserTimeout > 0 {
			b.WriteString("; to fail over sooner lower TCP_USER_TIMEOUT")
		} else {
			b.WriteString("; to fail over sooner set TCP_USER_TIMEOUT or lower net.ipv4.tcp_retries2")
		}
		if k := rtoMaxKnobs(s); k != "" {
			fmt.Fprintf(&b, ", and to resume sooner once the path is back cap the backoff (%s)", k)
		}
	case reasonRtxLossProbe:
		fmt.Fprintf(&b, "%s resent by a tail loss probe", segs)
		if s.HZKnown {
			fmt.Fprintf(&b, ": no ACK for %s (srtt %s) after the last segment", dur(s.SinceLastACK), dur(s.SRTT))
		}
		b.WriteString("; the probe asks the peer to acknowledge the tail so that a lost last segment is repaired without waiting for the retransmission timeout")
	case reasonRtxFast:
		fmt.Fprintf(&b, "%s retransmitted in loss recovery: the peer's ACKs (duplicate ACKs, SACK or RACK) showed %s lost and %d received out of order (cwnd %d, %s); packets are being dropped between the two ends", segs, plural(int(s.LostOut), "packet"), s.SackedOut, s.Cwnd, ssthreshText(x.Ssthresh))
	case reasonRtxSlowStart:
		fmt.Fprintf(&b, "%s retransmitted in slow start after a retransmission timeout (or a path-MTU drop): %s marked lost, cwnd %d, %s", segs, plural(int(s.LostOut), "packet"), s.Cwnd, ssthreshText(x.Ssthresh))
	default:
		fmt.Fprintf(&b, "%s retransmitted (%d bytes unacknowledged, cwnd %d)", segs, s.UnackedBytes, s.Cwnd)
	}
	if x.TransmitErr != 0 {
		fmt.Fprintf(&b, "; the retransmission never left this host: the IP layer refused it with %s", transmitErrName(x.TransmitErr))
	}
	b.WriteString(".")
	return b.String()
}

// WriteRetransmitFolded reports retransmitted segments counted in a later
// line of their socket than their own (Tracer.RetransmitFolded): the totals
// stay the kernel's, the kinds of those segments are the later line's.
func WriteRetransmitFolded(w io.Writer, n uint64) {
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "  retransmits seen late: %d segments were counted in their connection's next retransmit line, under its kind: their own retransmission was not seen (a transmit that failed, which fires no tracepoint before 6.17, or a probe run the kernel skipped); the totals still match RetransSegs\n", n)
}

// rtoSocksMax is the size of rto_socks (bpf/retransmit.bpf.c): the sockets
// that can be in an RTO episode at once with rto_stall watching them.
const rtoSocksMax = 4096

// WriteRTOUnwatched reports RTO episodes rto_stall did not watch
// (Tracer.RTOUnwatched): their connections' stalls and recoveries have no
// line; their retransmit lines are unaffected.
func WriteRTOUnwatched(w io.Writer, n uint64) {
	if n == 0 {
		return
	}
	fmt.Fprintf(w, "  RTO episodes not watched: %d: more than %d connections were in RTO backoff at once, the most rto_stall's table holds; those episodes have no rto_stall lines (their retransmit lines are complete)\n", n, rtoSocksMax)
}
