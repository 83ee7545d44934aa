package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
		{"memory pressure wins over everything", func(s *snapshot) { s.MemPressure = true; s.PeerWindow = 0 }, reasonMemoryPressure},
		{"zero window", func(s *snapshot) { s.PeerWindow = 0 }, reasonPeerZeroWindow},
		{"probe timer with an open window is not the peer", func(s *snapshot) { s.TimerPending = true; s.Timer = "zero_window_probe"; s.PacketsOut = 0 }, reasonUnknown},
		{"window full, peer acknowledging", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.HZKnown, s.SinceLastACK = 20500, 20000, true, 4*time.Millisecond
		}, reasonPeerZeroWindow},
		{"window full, no ACK for long: not the peer's reading", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.HZKnown, s.SinceLastACK = 20500, 20000, true, 150*time.Millisecond
		}, reasonUnknown},
		{"window full, RTO fired", func(s *snapshot) {
			s.PeerWindow, s.UnackedBytes, s.RTORetransmits = 20500, 20000, 2
		}, reasonUnackedRetransmitting},
		{"zero window before RTO backoff", func(s *snapshot) { s.PeerWindow = 0; s.RTORetransmits = 2 }, reasonPeerZeroWindow},
		{"RTO backoff", func(s *snapshot) { s.RTORetransmits = 7; s.Backoff = 7; s.InFlight = 10 }, reasonUnackedRetransmitting},
		{"retransmits without unacked data is not a stall", func(s *snapshot) { s.RTORetransmits = 1; s.UnackedBytes = 0 }, reasonUnknown},
		{"cwnd full", func(s *snapshot) { s.InFlight = 10 }, reasonCwndLimited},
		{"cwnd full but nothing unsent", func(s *snapshot) { s.InFlight = 10; s.NotsentBytes = 0 }, reasonUnknown},
		{"small fixed SO_SNDBUF", func(s *snapshot) { s.SndbufLocked = true }, reasonSndbufLimited},
		{"autotuned buffer, nothing limiting", func(s *snapshot) {}, reasonUnknown},
		{"notsent_lowat", func(s *snapshot) { s.WmemQueued = 1000; s.NotsentLowat = 16384; s.NotsentBytes = 16384 }, reasonNotsentLowat},
		{"room in the buffer, no lowat", func(s *snapshot) { s.WmemQueued = 1000 }, reasonUnknown},
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

func TestDecodeSendEAGAIN(t *testing.T) {
	r := sampleRaw()
	d := &decoder{hz: 1000, bootWall: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	e := d.decode(&r, tally{count: 1})

	if want := time.Date(2026, 1, 2, 3, 0, 5, 0, time.UTC); !e.Time.Equal(want) {
		t.Errorf("time %v, want %v", e.Time, want)
	}
	if e.Local != netip.MustParseAddrPort("10.0.0.1:41000") || e.Remote != netip.MustParseAddrPort("10.0.0.2:8080") || e.Family != 4 {
		t.Errorf("addresses %v -> %v family %d", e.Local, e.Remote, e.Family)
	}
	if e.PID != 4242 || e.Comm != "proxy" || e.Count != 1 || e.Type != SendEAGAIN {
		t.Errorf("task fields: %+v", e)
	}
	if e.Reason != reasonUnackedRetransmitting {
		t.Errorf("reason %s", e.Reason)
	}
	want := map[string]any{
		"unacked_bytes": uint32(1500), "notsent_bytes": uint32(1000), "since_last_ack_ms": 5000.0,
		"rto_ms": 3200.0, "timer_in_ms": 12800.0, "timer": "retransmit", "srtt_us": int64(1500),
		"packets_in_flight": uint32(1), "nodelay": true, "cork": false, "rto_retransmits": uint8(4),
		"sndbuf_bytes": 46080, "probe": "tracepoint", "ret": int32(-11),
	}
	for k, v := range want {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
}

func TestDecodeIPv6AndMapped(t *testing.T) {
	r := sampleRaw()
	r.S.Family = unix.AF_INET6
	r.S.Saddr = netip.MustParseAddr("2001:db8::1").As16()
	r.S.Daddr = netip.MustParseAddr("::ffff:192.0.2.7").As16()
	d := &decoder{hz: 250}
	e := d.decode(&r, tally{count: 1})
	if e.Family != 6 || e.Local.Addr().String() != "2001:db8::1" || e.Remote.Addr().String() != "192.0.2.7" {
		t.Errorf("got family %d %v -> %v", e.Family, e.Local, e.Remote)
	}
	if e.Details["rto_ms"] != 12800.0 { // 3200 jiffies at HZ=250
		t.Errorf("rto_ms at HZ=250: %v", e.Details["rto_ms"])
	}
}

func TestDecodeWithoutHZLeavesDurationsOut(t *testing.T) {
	r := sampleRaw()
	e := (&decoder{}).decode(&r, tally{count: 1})
	for _, k := range []string{"rto_ms", "since_last_ack_ms", "timer_in_ms"} {
		if _, ok := e.Details[k]; ok {
			t.Errorf("details has %s without HZ", k)
		}
	}
}

func TestExplainSendCarriesItsNumbers(t *testing.T) {
	cut := full()
	cut.SndbufBytes, cut.WmemQueued = 212992, 212992
	cut.UnackedBytes, cut.RTORetransmits, cut.Backoff = 184320, 7, 7
	cut.HZKnown, cut.SinceLastACK = true, 5200*time.Millisecond
	cut.TimerPending, cut.Timer, cut.TimerIn, cut.TimerFiresIn = true, "retransmit", 12800*time.Millisecond, 12800*time.Millisecond
	cut.RTO = 12800 * time.Millisecond
	cut.NoDelay = true

	// The path is back: an ACK 20 ms ago, the latest retransmission 8.8 s
	// ago (its timer armed with the 12.8 s RTO fires in 4 s).
	back := cut
	back.SinceLastACK, back.TimerIn, back.TimerFiresIn = 20*time.Millisecond, 4*time.Second, 4*time.Second

	zero := full()
	zero.PeerWindow, zero.NotsentBytes, zero.ProbesOut = 0, 65536, 4

	backKnobs := back
	backKnobs.RTOMaxSockopt, backKnobs.RTOMaxSysctl = true, true

	noHZ := cut
	noHZ.HZKnown = false

	locked := full()
	locked.SndbufLocked, locked.SndbufBytes, locked.WmemQueued = true, 4608, 4608

	tests := []struct {
		name    string
		typ     EventType
		reason  Reason
		s       snapshot
		n       tally
		want    []string
		notWant []string
	}{
		{"cut path", SendEAGAIN, reasonUnackedRetransmitting, cut, tally{count: 1},
			[]string{"send buffer full (212992 of 212992 bytes queued)", "184320 bytes unacknowledged",
				"7 consecutive retransmission timeouts", "the next in 13 s", "no ACK for 5.2 s", "path down or peer gone", "TCP_USER_TIMEOUT", "TCP_NODELAY is set."}, []string{"heard"}},
		{"path back, data waiting for the timer", SendEAGAIN, reasonUnackedRetransmitting, back, tally{count: 1},
			[]string{"the next in 4.0 s", "the peer is heard (an ACK 20 ms ago, after the latest retransmission)", "rto_stall", "TCP_NODELAY is not the cause"},
			[]string{"path down", "no ACK"}},
		{"path back, the ceiling fixed on this kernel", SendEAGAIN, reasonUnackedRetransmitting, back, tally{count: 1},
			[]string{"the backoff's ceiling is fixed at 120 s on this kernel", "TCP_NODELAY is not the cause (it is set)"},
			[]string{"TCP_RTO_MAX_MS", "tcp_rto_max_ms", "TCP_NODELAY is set."}},
		{"path back, a kernel with both settings", SendEAGAIN, reasonUnackedRetransmitting, backKnobs, tally{count: 1},
			[]string{"cap the backoff (TCP_RTO_MAX_MS per socket, net.ipv4.tcp_rto_max_ms per namespace)"},
			[]string{"fixed"}},
		{"durations left out without HZ", SendEAGAIN, reasonUnackedRetransmitting, noHZ, tally{count: 1},
			[]string{"184320 bytes unacknowledged,"}, []string{" for ", "next in"}},
		{"zero window", SendEAGAIN, reasonPeerZeroWindow, zero, tally{count: 1},
			[]string{"zero window", "65536 bytes wait unsent", "4 zero-window probes unanswered", "not reading"}, []string{"TCP_NODELAY"}},
		{"fixed sndbuf", SendEAGAIN, reasonSndbufLimited, locked, tally{count: 1},
			[]string{"SO_SNDBUF set by the application", "4608-byte SO_SNDBUF is the limit", "tcp_wmem"}, nil},
		{"blocked, several waits", SendBlocked, reasonPeerZeroWindow, zero, tally{count: 3, wait: 2500 * time.Millisecond, maxWait: 2 * time.Second},
			[]string{"send() slept 2.5 s in 3 waits for send-buffer space (longest 2.0 s)"}, nil},
		{"blocked, still waiting", SendBlocked, reasonPeerZeroWindow, zero, tally{count: 1, wait: 42 * time.Second, inProgress: true},
			[]string{"has been blocked for 42 s", "still waiting"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := explainSend(tt.typ, tt.reason, &tt.s, tt.n)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("explanation lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("explanation has %q:\n%s", w, got)
				}
			}
			if !strings.HasSuffix(got, ".") || strings.Count(got, "\n") > 0 {
				t.Errorf("want one sentence on one line, got %q", got)
			}
		})
	}
}
