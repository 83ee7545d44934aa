package tracer

import (
	"testing"
	"time"
)

// full is a send buffer at its limit, with everything else quiet: each case
// changes what makes its reason true.
func full() snapshot {
	return snapshot{
		State: "ESTABLISHED", SndbufBytes: 87040, WmemQueued: 87040,
		UnackedBytes: 20000, NotsentBytes: 40000, PeerWindow: 1 << 20,
		Cwnd: 10, InFlight: 4, MSS: 1448, Timer: "none",
	}
}

func TestClassifySend(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*snapshot)
		want Reason
	}{
		{"memory pressure wins over everything", func(s *snapshot) { s.MemPressure = true; s.PeerWindow = 0 }, ReasonMemoryPressure},
		{"zero window", func(s *snapshot) { s.PeerWindow = 0 }, ReasonPeerZeroWindow},
		{"probe timer with an open window is not the peer", func(s *snapshot) { s.TimerPending = true; s.Timer = "zero_window_probe"; s.PacketsOut = 0 }, ReasonUnknown},
		{"window full, peer acknowledging", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.HZKnown, s.SinceLastACK = 20500, 20000, true, 4*time.Millisecond
		}, ReasonPeerZeroWindow},
		{"window full, no ACK for long: not the peer's reading", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.HZKnown, s.SinceLastACK = 20500, 20000, true, 150*time.Millisecond
		}, ReasonUnknown},
		{"window full, RTO fired", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.RTORetransmits = 20500, 20000, 2
		}, ReasonUnackedRetransmitting},
		{"zero window before RTO backoff", func(s *snapshot) { s.PeerWindow = 0; s.RTORetransmits = 2 }, ReasonPeerZeroWindow},
		{"RTO backoff", func(s *snapshot) { s.RTORetransmits = 7; s.Backoff = 7; s.InFlight = 10 }, ReasonUnackedRetransmitting},
		{"retransmits without unacked data is not a stall", func(s *snapshot) { s.RTORetransmits = 1; s.UnackedBytes = 0 }, ReasonUnknown},
		{"cwnd full", func(s *snapshot) { s.InFlight = 10 }, ReasonCwndLimited},
		{"cwnd full but nothing unsent", func(s *snapshot) { s.InFlight = 10; s.NotsentBytes = 0 }, ReasonUnknown},
		{"small fixed SO_SNDBUF", func(s *snapshot) { s.SndbufLocked = true }, ReasonSndbufLimited},
		{"autotuned buffer, nothing limiting", func(s *snapshot) {}, ReasonUnknown},
		{"notsent_lowat", func(s *snapshot) { s.WmemQueued = 1000; s.NotsentLowat = 16384; s.NotsentBytes = 16384 }, ReasonNotsentLowat},
		{"room in the buffer, no lowat", func(s *snapshot) { s.WmemQueued = 1000 }, ReasonUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := full()
			tt.mod(&s)
			if got := classifySend(&s); got != tt.want {
				t.Errorf("classifySend() = %s, want %s", got, tt.want)
			}
		})
	}
}
