package tracer

import (
	"strings"
	"testing"
	"time"
)

func TestExplainNagle(t *testing.T) {
	r := delackRaw(NagleDelackStall)
	e := (&decoder{hz: 250}).decode(&r, tally{count: 3, wait: 129 * time.Millisecond, maxWait: 44 * time.Millisecond})
	if e.Reason != reasonPeerDelayedACK || e.Details["peer_pid"] != uint32(777) || e.Details["peer_comm"] != "client" {
		t.Fatalf("reason %s details %v", e.Reason, e.Details)
	}
	for _, s := range []string{"Nagle held 200 bytes for 43 ms on average over 3 (longest 44 ms)", "64 bytes", "peer pid 777 client",
		"ACK held 42 ms", "writev", "TCP_NODELAY", "TCP_QUICKACK"} {
		if !strings.Contains(e.Explanation, s) {
			t.Errorf("explanation lacks %q: %s", s, e.Explanation)
		}
	}

	plain := delackRaw(NagleStall)
	p := (&decoder{hz: 250}).decode(&plain, tally{count: 1, wait: 41 * time.Millisecond, maxWait: 41 * time.Millisecond})
	if p.Reason != reasonUnackedSmall || p.Details["release_ack_payload_bytes"] != uint32(0) || p.Details["stall_ms"] != 41.0 {
		t.Fatalf("reason %s details %v", p.Reason, p.Details)
	}
	if !strings.Contains(p.Explanation, "released by a pure ACK") || !strings.Contains(p.Explanation, "40 ms more than the round trip") {
		t.Errorf("explanation: %s", p.Explanation)
	}
	// Released by the peer's reply after about a round trip: no claim
	// about the peer holding its ACK.
	plain.A.AckPayload = 300
	q := (&decoder{hz: 250}).decode(&plain, tally{count: 1, wait: time.Millisecond, maxWait: time.Millisecond})
	if strings.Contains(q.Explanation, "held its ACK") || !strings.Contains(q.Explanation, "released by the peer's reply (300 bytes") {
		t.Errorf("explanation: %s", q.Explanation)
	}
}
