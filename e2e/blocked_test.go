package e2e

import (
	"syscall"
	"testing"
	"time"
)

// A blocking sender stuck behind a receiver that stops reading for 2.5 s:
// tcptrace reports the send as blocked while it is blocked, then how long
// it waited once it is released.
func TestSendBlocked(t *testing.T) {
	requireEvents(t, "send_blocked")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "send_blocked", "--interval", "500ms")
	h := startHelper(t, ns, "blocked", 2500*time.Millisecond)
	h.run()
	time.Sleep(200 * time.Millisecond)
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	evs := tr.eventsFor("send_blocked", h.PID)
	var inProgress int
	var waitedMs float64
	for _, e := range evs {
		if e.LPort != h.LPort || e.RPort != h.Port {
			t.Errorf("wrong connection: %s", dump([]event{e}))
		}
		if e.Details["in_progress"] == true {
			inProgress++
			continue
		}
		waitedMs += e.Details["wait_ms"].(float64)
	}
	if inProgress == 0 {
		t.Errorf("no in-progress line while the sender was stuck:\n%s\nstderr:\n%s", dump(evs), tr.stderrText())
	}
	blocked := float64(h.resultUint("blocked_ms"))
	if waitedMs < 2000 || waitedMs > blocked+50 {
		t.Errorf("waits add up to %.0f ms; the sender was blocked in write() for %.0f ms, at least 2000 of them waiting:\n%s", waitedMs, blocked, dump(evs))
	}
	t.Logf("sender blocked %.0f ms; tcptrace: %.0f ms waiting, %d in-progress lines:\n%s", blocked, waitedMs, inProgress, dump(evs))
}
