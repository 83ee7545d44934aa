package tracer

import (
	"strings"
	"testing"
	"time"
)

// delackRaw is a record of the snapshot a delayed ACK and a Nagle hold
// share (struct ack_snapshot), for event typ.
func delackRaw(typ EventType) tcptraceEvent {
	r := sampleRaw()
	r.Type = uint8(typ)
	r.S.SrttUs = 50 << 3
	r.S.Nonagle = 0
	r.S.WriteSeq, r.S.SndNxt = 5200, 5000
	r.A = tcptraceAckSnapshot{
		HeldNs: uint64(43 * time.Millisecond), Ato: 10, Pingpong: 1, InPingpong: 1,
		UnackedBytes: 64, RcvMss: 536, HeldBytes: 200, SmallInflight: 64,
		PeerPid: 777, PeerAto: 10, PeerHeldNs: uint64(42 * time.Millisecond), PeerInPingpong: 1,
		PeerOwnerKnown: 1, OwnerKnown: 1,
	}
	copy(r.A.PeerComm[:], "client")
	return r
}

func TestClassifyDelayedACK(t *testing.T) {
	for _, c := range []struct {
		a    delackState
		want Reason
	}{
		{delackState{interactive: true, quickLeft: 3}, reasonPingpong},
		{delackState{pingpong: 1}, reasonQuickackExhausted}, // below the threshold: the kernel did not treat it as interactive
		{delackState{quickLeft: 2}, reasonOther},
	} {
		if got := classifyDelayedACK(&c.a); got != c.want {
			t.Errorf("%+v: %s, want %s", c.a, got, c.want)
		}
	}
}

func TestDecodeDelayedACK(t *testing.T) {
	r := delackRaw(DelayedACK)
	e := (&decoder{hz: 250}).decode(&r, tally{count: 1, wait: 43 * time.Millisecond, maxWait: 43 * time.Millisecond})
	if e.Type != DelayedACK || e.Reason != reasonPingpong || e.PID != 4242 {
		t.Fatalf("got %s %s pid %d", e.Type, e.Reason, e.PID)
	}
	for k, v := range map[string]any{
		"ato_ms": 40.0, "ato_jiffies": uint32(10), "held_ms": 43.0, "interactive": true, "pingpong": uint8(1),
		"unacked_bytes": uint32(64), "quick_acks_left": uint8(0), "owner_known": true,
	} {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
	for _, s := range []string{"delayed ACK held for 43 ms", "ato estimate 40 ms", "interactive/pingpong mode", "64 bytes unacknowledged", "TCP_QUICKACK"} {
		if !strings.Contains(e.Explanation, s) {
			t.Errorf("explanation lacks %q: %s", s, e.Explanation)
		}
	}
}

// A timer armed before tcptrace started has no known start: no held time
// is claimed, and without HZ no ato in milliseconds.
func TestDecodeDelayedACKUnknowns(t *testing.T) {
	r := delackRaw(DelayedACK)
	r.A.HeldNs = 0
	r.A.OwnerKnown = 0
	e := (&decoder{}).decode(&r, tally{count: 1})
	for _, k := range []string{"held_ms", "ato_ms"} {
		if _, ok := e.Details[k]; ok {
			t.Errorf("details has %s without its source", k)
		}
	}
	if strings.Contains(e.Explanation, "held") || strings.Contains(e.Explanation, "ato") {
		t.Errorf("explanation claims what was not read: %s", e.Explanation)
	}
	if e.PID != 0 || e.Comm != "" {
		t.Errorf("timer-context task taken for the owner: pid %d %q", e.PID, e.Comm)
	}
}
