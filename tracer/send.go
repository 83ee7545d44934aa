package tracer

import "time"

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
func classifySend(s *Snapshot) Reason {
	if s.MemPressure {
		return ReasonMemoryPressure
	}
	full := s.WmemQueued >= s.SndbufBytes
	if !full {
		if s.NotsentLowat > 0 && s.NotsentBytes >= s.NotsentLowat {
			return ReasonNotsentLowat
		}
		return ReasonUnknown
	}
	switch {
	case s.PeerWindow == 0:
		return ReasonPeerZeroWindow
	case s.RTORetransmits > 0 && s.UnackedBytes > 0:
		return ReasonUnackedRetransmitting
	case s.peerWindowClosed():
		return ReasonPeerZeroWindow
	case s.Cwnd > 0 && s.InFlight >= s.Cwnd && s.NotsentBytes > 0:
		return ReasonCwndLimited
	case s.SndbufLocked:
		return ReasonSndbufLimited
	}
	return ReasonUnknown
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
func (s *Snapshot) peerWindowClosed() bool {
	if s.PeerWindow == 0 {
		return true
	}
	return s.windowFull() && s.HZKnown && s.SinceLastACK <= max(4*s.SRTT, 20*time.Millisecond)
}

// windowFull: what the peer's window still admits beyond the data in flight
// is less than one segment, and data waits.
func (s *Snapshot) windowFull() bool {
	return s.NotsentBytes > 0 && s.MSS > 0 && s.UsableWindow() < int64(s.MSS)
}

// localTransmitStuck: data waits, nothing is in flight, the peer's window is
// open and the congestion window is not the limit. TCP sends whenever it can,
// so the transmit itself is failing: a local drop (netfilter, qdisc) or no
// route. tcp_write_xmit() leaves such a segment unsent and retries it from
// the probe timer.
func (s *Snapshot) localTransmitStuck() bool {
	return s.NotsentBytes > 0 && s.PacketsOut == 0 && !s.windowFull() && s.PeerWindow > 0
}

// UsableWindow is what the peer's window still admits beyond the data in
// flight: snd_una + snd_wnd - snd_nxt (negative if the peer shrank it).
func (s *Snapshot) UsableWindow() int64 {
	return int64(s.PeerWindow) - int64(s.UnackedBytes)
}
