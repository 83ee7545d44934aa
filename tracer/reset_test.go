package tracer

import (
	"strings"
	"testing"
)

func TestDecodeReset(t *testing.T) {
	d := &decoder{hz: 250, conn: &connFacts{rstReasons: map[uint32]string{3: "TCP_ABORT_ON_CLOSE"}}}
	r := sampleConnRaw(Reset)
	r.C.Side, r.C.State, r.C.Unread, r.C.RstReasonKnown, r.C.RstReason = 1, 7, 32, 1, 3
	e := d.decode(&r, tally{count: 1})
	if e.Reason != reasonResetSent || e.Details["rst_reason"] != "TCP_ABORT_ON_CLOSE" || !strings.Contains(e.Explanation, "32 bytes unread") {
		t.Errorf("reset sent: %s %v", e.Explanation, e.Details)
	}
	r.C.Side, r.C.State, r.C.RstReasonKnown = 2, 1, 0
	e = d.decode(&r, tally{count: 1})
	if e.Reason != reasonResetReceived || e.Details["rst_reason"] != nil || !strings.Contains(e.Explanation, "in state ESTABLISHED") {
		t.Errorf("reset received: %s %v", e.Explanation, e.Details)
	}
	// An aggregated line stands for every reset from the peer's address in
	// the interval: it says so instead of naming one connection.
	e = d.decode(&r, tally{count: 6})
	if !strings.Contains(e.Explanation, "reset received from 10.0.0.2:5432 and 5 more, the latest in state ESTABLISHED with") {
		t.Errorf("aggregated reset received: %s", e.Explanation)
	}
	r.C.Side, r.C.State = 1, 7
	e = d.decode(&r, tally{count: 3})
	if !strings.Contains(e.Explanation, "reset sent to 10.0.0.2:5432 and 2 more (the latest in state CLOSE)") {
		t.Errorf("aggregated reset sent: %s", e.Explanation)
	}
}
