package tracer

import (
	"bytes"
	"strings"
	"testing"
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
// armed at the latest retransmission runs out.
func TestRTOStallNextRetransmit(t *testing.T) {
	c := goldenCases()
	for _, gc := range c {
		if gc.name != "rto_stall_backoff" {
			continue
		}
		e := goldenDecode(gc)
		st := e.retransmit.stall
		if !st.NextKnown || st.Next+st.SinceLast != e.snap.RTO {
			t.Errorf("next %s + since last %s, RTO %s", st.Next, st.SinceLast, e.snap.RTO)
		}
		if e.Details["next_retransmit_ms"] != 3800.0 || e.Details["stall_ms"] != 9200.0 {
			t.Errorf("details %v", e.Details)
		}
		return
	}
	t.Fatal("no golden case rto_stall_backoff")
}
