package tracer

import (
	"fmt"
	"strings"
	"time"
)

// The send detector (bpf/send.bpf.c): a send() that found no room in the
// socket's send buffer, returned EAGAIN (send_eagain) or slept for space
// (send_blocked).
const (
	SendEAGAIN  EventType = EventType(tcptraceEventTypeEVENT_SEND_EAGAIN)
	SendBlocked EventType = EventType(tcptraceEventTypeEVENT_SEND_BLOCKED)
)

// Why the buffer was full (classifySend).
const (
	reasonPeerZeroWindow        Reason = "peer_zero_window"
	reasonUnackedRetransmitting Reason = "unacked_retransmitting"
	reasonCwndLimited           Reason = "cwnd_limited"
	reasonSndbufLimited         Reason = "sndbuf_limited"
	reasonMemoryPressure        Reason = "memory_pressure"
	reasonNotsentLowat          Reason = "notsent_lowat"
)

var sendDetector = &detector{
	name:    "send",
	events:  []eventSpec{{SendEAGAIN, "send_eagain"}, {SendBlocked, "send_blocked"}},
	reasons: []Reason{reasonPeerZeroWindow, reasonUnackedRetransmitting, reasonCwndLimited, reasonSndbufLimited, reasonMemoryPressure, reasonNotsentLowat, reasonUnknown},
	probes: []probeSet{
		{
			events: []EventType{SendEAGAIN},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/sock_send_length (6.3+)",
					progs: attach("tp_sock_send_length"), enable: hookEAGAIN},
				{path: PathFentry, hooks: "fexit/tcp_sendmsg",
					progs: attach("fexit_tcp_sendmsg"), enable: hookEAGAIN},
				{path: PathKprobe, hooks: "kprobe+kretprobe/tcp_sendmsg",
					progs: attach("kprobe_tcp_sendmsg", "kretprobe_tcp_sendmsg"), enable: hookEAGAIN},
			},
		},
		{
			events: []EventType{SendBlocked},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/tcp_sendmsg_locked (6.16+) + tp_btf/sock_send_length",
					progs: attach("tp_tcp_sendmsg_locked", "tp_sock_send_length"), enable: hookWait},
				{path: PathFentry, hooks: "fentry+fexit/sk_stream_wait_memory",
					progs: attach("fentry_sk_stream_wait_memory", "fexit_sk_stream_wait_memory")},
				{path: PathKprobe, hooks: "kprobe+kretprobe/sk_stream_wait_memory",
					progs: attach("kprobe_sk_stream_wait_memory", "kretprobe_sk_stream_wait_memory")},
			},
		},
	},
	// A line of a send still blocked is counted when the send returns.
	durations: []durationSpec{{
		name: "send_blocked", events: []EventType{SendBlocked},
		help: "How long a blocking send waited for room in the send buffer.",
		sum:  func(e *Event) (time.Duration, bool) { return e.tally.wait, !e.inProgress },
	}},
	decode:  decodeSend,
	explain: func(e Event, t tally) string { return explainSend(e.Type, e.Reason, &e.snap, t) },
}

// decodeSend: the sender's own task and socket, read in its send().
func decodeSend(d *decoder, r *tcptraceEvent, t tally) Event {
	e := d.connEvent(r, t)
	e.Reason = classifySend(&e.snap)
	e.Details = sendDetails(&e.snap, r, e.Path)
	if e.Type == SendBlocked {
		e.Details["wait_ms"] = ms(t.wait)
		e.Details["max_wait_ms"] = ms(t.maxWait)
		e.Details["in_progress"] = t.inProgress
		e.inProgress = t.inProgress
	}
	return e
}

// classifySend names why a send found no room, from the socket's state at
// that moment. The order matters, and follows the kernel's own tests:
//
//  1. Global memory pressure: when tcp_mem's pressure threshold is crossed the
//     kernel shrinks every unlocked send buffer to what is queued
//     (sk_stream_moderate_sndbuf) and refuses new charges, so the buffer looks
//     full whatever the connection is doing.
//  2. A buffer that is not full can only have refused the send through the
//     notsent_lowat test (tcp_stream_memory_free).
//  3. With a full buffer, the question is why the queued data does not drain:
//     the peer closed its window (zero-window probes, rwnd), the data is not
//     being acknowledged at all (RTO backoff: the retransmission timer fired
//     and no ACK came since; a zero-window probe also backs off, so the
//     window test comes first), the congestion window is the limit, or none
//     of those, and the buffer the application fixed is simply small.
func classifySend(s *snapshot) Reason {
	if s.MemPressure {
		return reasonMemoryPressure
	}
	full := s.WmemQueued >= s.SndbufBytes
	if !full {
		if s.NotsentLowat > 0 && s.NotsentBytes >= s.NotsentLowat {
			return reasonNotsentLowat
		}
		return reasonUnknown
	}
	switch {
	case s.PeerWindow == 0:
		return reasonPeerZeroWindow
	case s.RTORetransmits > 0 && s.UnackedBytes > 0:
		return reasonUnackedRetransmitting
	case s.peerWindowClosed():
		return reasonPeerZeroWindow
	case s.Cwnd > 0 && s.InFlight >= s.Cwnd && s.NotsentBytes > 0:
		return reasonCwndLimited
	case s.SndbufLocked:
		return reasonSndbufLimited
	}
	return reasonUnknown
}

// peerWindowClosed: the peer advertises no window, or its window is full of
// data in flight while the peer keeps acknowledging (an ACK within the last
// four RTTs, 20 ms at least for jiffies granularity): it receives but makes
// no room, so its application reads slower than this one writes.
// tcp_snd_wnd_test() wants a whole segment inside the window, so a remainder
// smaller than an MSS is as closed as a zero window while data waits. A full
// window with no recent ACK is not the peer's reading: the data is not
// getting through (and the RTO will say so). The probe0 timer alone proves
// nothing: TCP arms it whenever data waits with nothing in flight
// (tcp_check_probe_timer()), which a failing local transmit does too.
func (s *snapshot) peerWindowClosed() bool {
	if s.PeerWindow == 0 {
		return true
	}
	return s.windowFull() && s.HZKnown && s.SinceLastACK <= max(4*s.SRTT, 20*time.Millisecond)
}

// windowFull: what the peer's window still admits beyond the data in flight
// is less than one segment, and data waits.
func (s *snapshot) windowFull() bool {
	return s.NotsentBytes > 0 && s.MSS > 0 && s.usableWindow() < int64(s.MSS)
}

// localTransmitStuck: data waits, nothing is in flight, the peer's window is
// open and the congestion window is not the limit. TCP sends whenever it can,
// so the transmit itself is failing: a local drop (netfilter, qdisc) or no
// route. tcp_write_xmit() leaves such a segment unsent and retries it from
// the probe timer.
func (s *snapshot) localTransmitStuck() bool {
	return s.NotsentBytes > 0 && s.PacketsOut == 0 && !s.windowFull() && s.PeerWindow > 0
}

// usableWindow is what the peer's window still admits beyond the data in
// flight: snd_una + snd_wnd - snd_nxt (negative if the peer shrank it).
func (s *snapshot) usableWindow() int64 {
	return int64(s.PeerWindow) - int64(s.UnackedBytes)
}

// sendDetails lists every number read, with its unit in the key.
func sendDetails(s *snapshot, r *tcptraceEvent, path ProbePath) map[string]any {
	// Sized for every key a line can carry: a map that grows while it is
	// filled costs more than the rest of the line.
	d := make(map[string]any, detailsCap)
	d["probe"] = path.String()
	d["ret"] = r.Ret
	d["state"] = s.State
	d["sndbuf_bytes"] = s.SndbufBytes
	d["sndbuf_set_by_app"] = s.SndbufLocked
	d["wmem_queued_bytes"] = s.WmemQueued
	d["unacked_bytes"] = s.UnackedBytes
	d["notsent_bytes"] = s.NotsentBytes
	d["peer_window_bytes"] = s.PeerWindow
	d["cwnd_packets"] = s.Cwnd
	d["mss_bytes"] = s.MSS
	d["packets_out"] = s.PacketsOut
	d["packets_in_flight"] = s.InFlight
	d["retrans_out_packets"] = s.RetransOut
	d["lost_packets"] = s.LostOut
	d["sacked_packets"] = s.SackedOut
	d["total_retrans_packets"] = s.TotalRetrans
	d["rto_retransmits"] = s.RTORetransmits
	d["backoff"] = s.Backoff
	d["zero_window_probes"] = s.ProbesOut
	d["timer"] = s.Timer
	d["srtt_us"] = s.SRTT.Microseconds()
	d["nodelay"] = s.NoDelay
	d["cork"] = s.Cork
	d["notsent_lowat_bytes"] = s.NotsentLowat
	d["tcp_memory_pressure"] = s.MemPressure
	d["tcp_memory_pages"] = s.MemAllocated
	d["socket_inode"] = r.S.Ino
	if s.HZKnown {
		d["rto_ms"] = ms(s.RTO)
		d["since_last_ack_ms"] = ms(s.SinceLastACK)
		optMs(d, "timer_in_ms", s.TimerIn, s.TimerPending)
	}
	return d
}

// explainSend writes the one-sentence explanation of a send_eagain or
// send_blocked line: what filled the buffer, with the numbers that prove it,
// then what to change. Every figure in it is one of the event's details;
// durations that need HZ are left out when HZ is unknown.
func explainSend(t EventType, r Reason, s *snapshot, n tally) string {
	var b strings.Builder
	blocked := func() {
		switch {
		case t != SendBlocked:
			return
		case n.inProgress:
			fmt.Fprintf(&b, "send() has been blocked for %s waiting for send-buffer space (still waiting)", dur(n.wait))
		case n.count > 1:
			fmt.Fprintf(&b, "send() slept %s in %d waits for send-buffer space (longest %s)", dur(n.wait), n.count, dur(n.maxWait))
		default:
			fmt.Fprintf(&b, "send() slept %s waiting for send-buffer space", dur(n.wait))
		}
		b.WriteString("; ")
	}
	blocked()
	nodelaySaid := false
	fmt.Fprintf(&b, "send buffer full (%d of %d bytes queued", s.WmemQueued, s.SndbufBytes)
	if s.SndbufLocked {
		b.WriteString(", SO_SNDBUF set by the application")
	}
	b.WriteString(")")

	switch r {
	case reasonMemoryPressure:
		b.Reset()
		blocked()
		fmt.Fprintf(&b, "TCP is under global memory pressure (%d pages charged to TCP; %d of %d bytes queued on this socket): the kernel shrinks send buffers and refuses new memory host-wide; raise net.ipv4.tcp_mem or find the sockets holding memory (ss -tm)", s.MemAllocated, s.WmemQueued, s.SndbufBytes)
	case reasonNotsentLowat:
		b.Reset()
		blocked()
		fmt.Fprintf(&b, "%d bytes not yet sent reach TCP_NOTSENT_LOWAT (%d bytes), so the socket counts as full until they drain below it; raise or remove TCP_NOTSENT_LOWAT if that is not intended", s.NotsentBytes, s.NotsentLowat)
	case reasonPeerZeroWindow:
		if s.PeerWindow == 0 {
			fmt.Fprintf(&b, "; the peer advertises a zero window and %d bytes wait unsent", s.NotsentBytes)
		} else {
			fmt.Fprintf(&b, "; the peer's %d-byte window is full (%d bytes in flight leave %d, less than one %d-byte segment) although it acknowledges (last ACK %s ago), and %d bytes wait unsent",
				s.PeerWindow, s.UnackedBytes, max(s.usableWindow(), 0), s.MSS, dur(s.SinceLastACK), s.NotsentBytes)
		}
		if s.ProbesOut > 0 {
			fmt.Fprintf(&b, ", %s unanswered", plural(int(s.ProbesOut), "zero-window probe"))
		}
		b.WriteString(": the peer application is not reading its socket; fix the reader (slow or stuck), not the sender")
	case reasonUnackedRetransmitting:
		fmt.Fprintf(&b, "; %d bytes unacknowledged", s.UnackedBytes)
		if s.RTORetransmits == 1 {
			b.WriteString(", 1 retransmission timeout")
		} else {
			fmt.Fprintf(&b, ", %d consecutive retransmission timeouts", s.RTORetransmits)
		}
		rtxTimer := s.HZKnown && s.TimerPending && s.Timer == "retransmit"
		if rtxTimer && s.TimerFiresIn > 0 {
			fmt.Fprintf(&b, ", the next in %s", dur(s.TimerFiresIn))
		} else if rtxTimer {
			b.WriteString(", the next due now")
		}
		// The timer was armed with the current RTO at the latest
		// retransmission: an ACK younger than that came after it.
		if rtxTimer && s.SinceLastACK < s.RTO-s.TimerIn {
			fmt.Fprintf(&b, "; the peer is heard (an ACK %s ago, after the latest retransmission) but acknowledges none of these bytes: they wait for the backed-off retransmission timer (rto_stall says until when); ", dur(s.SinceLastACK))
			if k := rtoMaxKnobs(s); k != "" {
				fmt.Fprintf(&b, "cap the backoff (%s), ", k)
			} else {
				fmt.Fprintf(&b, "the backoff's ceiling is fixed at %s on this kernel; ", dur(tcpRTOMax))
			}
			b.WriteString("set TCP_USER_TIMEOUT to fail over sooner; ")
			b.WriteString("TCP_NODELAY is not the cause")
			if s.NoDelay {
				b.WriteString(" (it is set)")
			}
			b.WriteString(": Nagle holds only data not yet sent")
			nodelaySaid = true
			break
		}
		if s.HZKnown {
			fmt.Fprintf(&b, ", no ACK for %s", dur(s.SinceLastACK))
		}
		b.WriteString(": the peer is not acknowledging (path down or peer gone); check the path and the peer, and set TCP_USER_TIMEOUT to fail sooner than net.ipv4.tcp_retries2 allows")
	case reasonCwndLimited:
		fmt.Fprintf(&b, "; %d packets in flight fill the congestion window (%d packets of %d bytes", s.InFlight, s.Cwnd, s.MSS)
		if s.SRTT > 0 {
			fmt.Fprintf(&b, ", srtt %s", dur(s.SRTT))
		}
		fmt.Fprintf(&b, ") and %d bytes wait unsent: the network path is the bottleneck", s.NotsentBytes)
		if s.TotalRetrans > 0 {
			fmt.Fprintf(&b, " (%d segments retransmitted so far: look for loss)", s.TotalRetrans)
		}
		b.WriteString("; a larger send buffer will not help")
	case reasonSndbufLimited:
		fmt.Fprintf(&b, "; the congestion window (%d of %d packets in flight) and the peer's window (%d bytes) have room: the %d-byte SO_SNDBUF is the limit; remove setsockopt(SO_SNDBUF) so the kernel autotunes it (net.ipv4.tcp_wmem), or raise it to the bandwidth-delay product", s.InFlight, s.Cwnd, s.PeerWindow, s.SndbufBytes)
	default:
		if s.localTransmitStuck() {
			fmt.Fprintf(&b, "; %d bytes wait unsent with nothing in flight although the peer's window (%d bytes) and the congestion window (%d packets) are open: transmits are failing on this host (a netfilter or qdisc drop, or no route); check nft/iptables rules, tc and the route to the peer", s.NotsentBytes, s.PeerWindow, s.Cwnd)
			break
		}
		if s.windowFull() && s.HZKnown {
			fmt.Fprintf(&b, "; %d bytes in flight fill the peer's %d-byte window and no ACK came for %s (the retransmission timer, %s, has not fired yet), %d bytes wait unsent: data may not be getting through; watch for retransmissions", s.UnackedBytes, s.PeerWindow, dur(s.SinceLastACK), dur(s.RTO), s.NotsentBytes)
			break
		}
		fmt.Fprintf(&b, "; %d bytes unacknowledged, %d unsent, peer window %d bytes, %d of %d packets in flight: no single limit stands out", s.UnackedBytes, s.NotsentBytes, s.PeerWindow, s.InFlight, s.Cwnd)
	}
	if s.NoDelay && !nodelaySaid {
		b.WriteString("; TCP_NODELAY is set")
	}
	if s.Cork {
		b.WriteString("; TCP_CORK is set")
	}
	b.WriteString(".")
	return b.String()
}
