package tracer

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
	case s.peerWindowClosed():
		return ReasonPeerZeroWindow
	case s.RTORetransmits > 0 && s.UnackedBytes > 0:
		return ReasonUnackedRetransmitting
	case s.Cwnd > 0 && s.InFlight >= s.Cwnd && s.NotsentBytes > 0:
		return ReasonCwndLimited
	case s.SndbufLocked:
		return ReasonSndbufLimited
	}
	return ReasonUnknown
}

// peerWindowClosed: the peer advertises no window, the zero-window probe
// timer runs, or what is left of its window cannot take one more segment
// (tcp_snd_wnd_test() wants the whole segment inside the window, so a window
// smaller than an MSS is as closed as a zero one while data waits).
func (s *Snapshot) peerWindowClosed() bool {
	if s.PeerWindow == 0 || (s.TimerPending && s.Timer == "zero_window_probe") {
		return true
	}
	return s.NotsentBytes > 0 && s.MSS > 0 && s.UsableWindow() < int64(s.MSS)
}

// UsableWindow is what the peer's window still admits beyond the data in
// flight: snd_una + snd_wnd - snd_nxt (negative if the peer shrank it).
func (s *Snapshot) UsableWindow() int64 {
	return int64(s.PeerWindow) - int64(s.UnackedBytes)
}
