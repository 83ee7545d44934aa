package tracer

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteRetransmitFolded(t *testing.T) {
	var b bytes.Buffer
	WriteRetransmitFolded(&b, 0)
	if b.Len() != 0 {
		t.Errorf("nothing folded, got %q", b.String())
	}
	WriteRetransmitFolded(&b, 3)
	if got := b.String(); !strings.Contains(got, "retransmits seen late: 3 segments") || strings.Count(got, "\n") != 1 {
		t.Errorf("got %q", got)
	}
}

// A stall line's numbers agree: the timer fires next when the RTO that was
// armed at the latest retransmission runs out, rounded up by the timer
// wheel to its level's granularity (an eighth of the RTO at most).
func TestRTOStallNextRetransmit(t *testing.T) {
	c := goldenCases()
	for _, gc := range c {
		if gc.name != "rto_stall_backoff" {
			continue
		}
		e := goldenDecode(gc)
		st := e.retransmit.stall
		if armed := st.Next + st.SinceLast; !st.NextKnown || armed < e.snap.RTO || armed > e.snap.RTO*9/8 {
			t.Errorf("next %s + since last %s, RTO %s", st.Next, st.SinceLast, e.snap.RTO)
		}
		// RTO 12.8 s at HZ 1000: 12800 jiffies, the wheel's level 3,
		// whose buckets are 512 jiffies: the expiry 3.8 s ahead is run
		// at the next multiple of 512 jiffies, 4.12 s ahead.
		if e.Details["next_retransmit_ms"] != 4120.0 || e.Details["stall_ms"] != 9200.0 {
			t.Errorf("details %v", e.Details)
		}
		return
	}
	t.Fatal("no golden case rto_stall_backoff")
}

// A first timeout finds the last ACK about one RTO old: the peer is heard
// only when the ACK is younger than the RTO by more than srtt and three
// ticks, whatever the kernel's HZ.
func TestPeerHeardBeforeTimeout(t *testing.T) {
	for _, hz := range []time.Duration{1000, 250, 100} {
		tick := time.Second / hz
		margin := time.Millisecond + 3*tick // srtt 1 ms
		s := snapshot{HZKnown: true, RTO: 204 * time.Millisecond, SRTT: time.Millisecond}
		for _, c := range []struct {
			since time.Duration
			heard bool
		}{
			{s.RTO + tick, false},   // armed in the tick after the ACK
			{s.RTO, false},          // a first timeout: the ACK armed it
			{s.RTO - tick, false},   // jiffy rounding
			{s.RTO - margin, false}, // an RTT less: armed from the head's send time
			{s.RTO - margin - tick, true},
			{20 * time.Millisecond, true}, // a duplicate ACK just now
		} {
			s.SinceLastACK = c.since
			if got := peerHeardBeforeTimeout(&s, tick); got != c.heard {
				t.Errorf("HZ %d: last ACK %s ago, RTO %s: heard %v, want %v", hz, c.since, s.RTO, got, c.heard)
			}
			x := retransmitState{Tick: tick}
			got := explainRetransmit(reasonRtxTimeout, &x, &s, 1)
			if strings.Contains(got, "the peer is heard") != c.heard || strings.Contains(got, "silent") == c.heard {
				t.Errorf("HZ %d: last ACK %s ago, RTO %s: %s", hz, c.since, s.RTO, got)
			}
		}
		s.SinceLastACK = 0
		if peerHeardBeforeTimeout(&s, 0) {
			t.Errorf("heard with HZ unknown")
		}
	}
}

// The RTO ceiling is offered as a setting only where the kernel has one,
// and called fixed where it has none.
func TestRTOCeilingSettings(t *testing.T) {
	base := snapshot{HZKnown: true, RTO: 6400 * time.Millisecond, RTORetransmits: 5, Backoff: 5, UnackedBytes: 1000, SinceLastACK: 9 * time.Second}
	x := retransmitState{RTOMax: tcpRTOMax, Retries2: 15, Tick: time.Millisecond, stall: rtoStall{StallKnown: true, Stall: 9 * time.Second}}
	for _, c := range []struct {
		sockopt, sysctl bool
		want, notWant   []string
	}{
		{false, false, []string{"fixed"}, []string{"TCP_RTO_MAX_MS", "tcp_rto_max_ms"}},
		{true, false, []string{"TCP_RTO_MAX_MS per socket"}, []string{"tcp_rto_max_ms", "fixed"}},
		{false, true, []string{"net.ipv4.tcp_rto_max_ms per namespace"}, []string{"TCP_RTO_MAX_MS", "fixed"}},
		{true, true, []string{"TCP_RTO_MAX_MS per socket", "net.ipv4.tcp_rto_max_ms per namespace"}, []string{"fixed"}},
	} {
		s := base
		s.RTOMaxSockopt, s.RTOMaxSysctl = c.sockopt, c.sysctl
		for _, got := range []string{
			explainRetransmit(reasonRtxTimeout, &x, &s, 1),
			explainRTOStall(reasonRTOBackoff, &x, &s, 1),
			explainRTOStall(reasonRecovered, &x, &s, 1),
		} {
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("sockopt %v sysctl %v: lacks %q: %s", c.sockopt, c.sysctl, w, got)
				}
			}
			for _, w := range c.notWant {
				if strings.Contains(got, w) {
					t.Errorf("sockopt %v sysctl %v: has %q: %s", c.sockopt, c.sysctl, w, got)
				}
			}
		}
	}
}

func TestWriteRTOUnwatched(t *testing.T) {
	var b bytes.Buffer
	WriteRTOUnwatched(&b, 0)
	if b.Len() != 0 {
		t.Errorf("nothing unwatched, got %q", b.String())
	}
	WriteRTOUnwatched(&b, 2)
	if got := b.String(); !strings.Contains(got, "RTO episodes not watched: 2: more than 4096") || strings.Count(got, "\n") != 1 {
		t.Errorf("got %q", got)
	}
}

// The summary names the table's size: the one the object declares.
func TestRTOSocksMax(t *testing.T) {
	spec, err := loadTcptrace()
	if err != nil {
		t.Fatal(err)
	}
	if m := spec.Maps["rto_socks"]; m == nil || m.MaxEntries != rtoSocksMax {
		t.Errorf("rto_socks: %+v, want %d entries", m, rtoSocksMax)
	}
}

// The timer wheel's level by how far ahead a timer is armed, and its
// expiry rounded up to that level's granularity (kernel/time/timer.c).
func TestWheelFires(t *testing.T) {
	for _, tc := range []struct{ expires, armedFor, want uint64 }{
		{1000000, 50, 1000001},    // level 0: the next tick
		{1000000, 400, 1000008},   // level 1: 8 jiffies
		{1000000, 3200, 1000064},  // level 2: 64 (12.8 s at HZ 250)
		{1000000, 6400, 1000448},  // level 3: 512 (25.6 s at HZ 250: up to 2 s late)
		{1000448, 6400, 1000960},  // on a boundary: the next one, never early
		{1000000, 40000, 1003520}, // level 4: 4096
	} {
		if got := wheelFires(tc.expires, tc.armedFor); got != tc.want {
			t.Errorf("wheelFires(%d, %d) = %d, want %d", tc.expires, tc.armedFor, got, tc.want)
		}
	}
}
