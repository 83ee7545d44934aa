package tracer

import (
	"strings"
	"testing"
)

func TestDecodePaws(t *testing.T) {
	d := &decoder{hz: 250, conn: &connFacts{dropReasons: map[uint32]string{38: "TCP_RFC7323_TW_PAWS", 36: "TCP_RFC7323_PAWS"}, rstReasons: map[uint32]string{3: "TCP_ABORT_ON_CLOSE"}}}
	r := sampleConnRaw(PawsReject)
	r.C.DropReason, r.C.TcpFlags, r.C.State = 38, 0x02, 6
	r.C.TsSeen, r.C.Tsval, r.C.TsRecentKnown, r.C.TsRecent = 1, 1000, 1, 101000
	e := d.decode(&r, tally{count: 2})
	if e.Reason != reasonPawsTimewait || e.Details["tsval_behind_by"] != int32(100000) || e.Details["syn"] != true {
		t.Errorf("paws: %v %v", e.Reason, e.Details)
	}
	if !strings.Contains(e.Explanation, "SYN from 10.0.0.2:5432 dropped") || !strings.Contains(e.Explanation, "NAT") || !strings.Contains(e.Explanation, "100000 behind the 101000") {
		t.Errorf("paws explanation: %s", e.Explanation)
	}
	r.C.DropReason = 36
	if e := d.decode(&r, tally{count: 1}); e.Reason != reasonPawsEstablished {
		t.Errorf("TCP_RFC7323_PAWS classified %v", e.Reason)
	}

}

// Before 6.16 the fentry/kprobe paths recognise a TIME_WAIT PAWS reject
// themselves: no drop reason, and the line says so.
func TestDecodePawsRecomputed(t *testing.T) {
	r := sampleConnRaw(PawsReject)
	r.C.DropReason, r.C.TcpFlags, r.C.State = pawsRecomputed, 0x02, 6
	r.C.TsSeen, r.C.Tsval, r.C.TsRecentKnown, r.C.TsRecent = 1, 5, 1, 7
	e := (&decoder{hz: 250, conn: &connFacts{dropReasons: map[uint32]string{36: "TCP_RFC7323_PAWS"}}}).decode(&r, tally{count: 1})
	if e.Reason != reasonPawsTimewait || !strings.HasPrefix(e.Details["drop_reason"].(string), "none (TIME_WAIT before 6.16") {
		t.Errorf("recomputed: %v %v", e.Reason, e.Details)
	}
	if strings.Contains(e.Explanation, "(TCP_RFC7323") || !strings.Contains(e.Explanation, "still in TIME_WAIT") {
		t.Errorf("explanation: %s", e.Explanation)
	}
}
