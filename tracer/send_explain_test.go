package tracer

import (
	"strings"
	"testing"
	"time"
)

func TestExplainSendCarriesItsNumbers(t *testing.T) {
	cut := full()
	cut.SndbufBytes, cut.WmemQueued = 212992, 212992
	cut.UnackedBytes, cut.RTORetransmits, cut.Backoff = 184320, 7, 7
	cut.HZKnown, cut.SinceLastACK = true, 5200*time.Millisecond
	cut.TimerPending, cut.Timer, cut.TimerIn = true, "retransmit", 12800*time.Millisecond
	cut.NoDelay = true

	zero := full()
	zero.PeerWindow, zero.NotsentBytes, zero.ProbesOut = 0, 65536, 4

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
		{"cut path", SendEAGAIN, ReasonUnackedRetransmitting, cut, tally{count: 1},
			[]string{"send buffer full (212992 of 212992 bytes queued)", "184320 bytes unacknowledged for 5.2 s",
				"7 consecutive retransmission timeouts", "next in 13 s", "path down or peer gone", "TCP_USER_TIMEOUT", "TCP_NODELAY is set."}, nil},
		{"durations left out without HZ", SendEAGAIN, ReasonUnackedRetransmitting, noHZ, tally{count: 1},
			[]string{"184320 bytes unacknowledged,"}, []string{" for ", "next in"}},
		{"zero window", SendEAGAIN, ReasonPeerZeroWindow, zero, tally{count: 1},
			[]string{"zero window", "65536 bytes wait unsent", "4 zero-window probes unanswered", "not reading"}, []string{"TCP_NODELAY"}},
		{"fixed sndbuf", SendEAGAIN, ReasonSndbufLimited, locked, tally{count: 1},
			[]string{"SO_SNDBUF set by the application", "4608-byte SO_SNDBUF is the limit", "tcp_wmem"}, nil},
		{"blocked, several waits", SendBlocked, ReasonPeerZeroWindow, zero, tally{count: 3, wait: 2500 * time.Millisecond, maxWait: 2 * time.Second},
			[]string{"send() slept 2.5 s in 3 waits for send-buffer space (longest 2.0 s)"}, nil},
		{"blocked, still waiting", SendBlocked, ReasonPeerZeroWindow, zero, tally{count: 1, wait: 42 * time.Second, inProgress: true},
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

func TestDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		800 * time.Microsecond:  "800 µs",
		40 * time.Millisecond:   "40 ms",
		5200 * time.Millisecond: "5.2 s",
		63 * time.Second:        "63 s",
		-2 * time.Second:        "-2.0 s",
	} {
		if got := dur(d); got != want {
			t.Errorf("dur(%v) = %q, want %q", d, got, want)
		}
	}
}
