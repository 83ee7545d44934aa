package e2e

import (
	"syscall"
	"testing"
	"time"
)

// A non-blocking TCP_NODELAY sender whose path is cut: every segment to the
// receiver is dropped, nothing is acknowledged, the RTO backs off and the
// send buffer fills. tcptrace must name the sender, the connection and the
// cause, and its counts must add up to the EAGAINs the sender saw.
func TestSendEAGAINCutPath(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "send_eagain", "--interval", "500ms")
	h := startHelper(t, ns, "cut", 3500*time.Millisecond)
	ns.dropToPort(h.Port)
	h.run()
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}

	evs := tr.eventsFor("send_eagain", h.PID)
	if len(evs) == 0 {
		t.Fatalf("no send_eagain from pid %d; stderr:\n%s", h.PID, tr.stderrText())
	}
	retransmitting := 0
	for _, e := range evs {
		if e.LAddr != "127.0.0.1" || e.LPort != h.LPort || e.RAddr != "127.0.0.1" || e.RPort != h.Port || e.Family != 4 {
			t.Errorf("wrong connection: %s", dump([]event{e}))
		}
		if e.Details["nodelay"] != true {
			t.Errorf("TCP_NODELAY not seen: %s", dump([]event{e}))
		}
		if e.Reason == "unacked_retransmitting" {
			retransmitting++
			if n, _ := e.Details["rto_retransmits"].(float64); n < 1 {
				t.Errorf("unacked_retransmitting without an RTO: %v", e.Details)
			}
		}
	}
	if retransmitting == 0 {
		t.Errorf("no event with reason unacked_retransmitting:\n%s", dump(evs))
	}
	if got, want := sumCounts(evs), h.resultUint("eagains"); got != want {
		t.Errorf("counts add up to %d, the sender saw %d EAGAINs:\n%s", got, want, dump(evs))
	}
	t.Logf("%d lines, %d EAGAINs:\n%s", len(evs), sumCounts(evs), dump(evs))
}

// A receiver that never reads: its window closes and the sender's buffer
// fills behind it.
func TestSendEAGAINPeerZeroWindow(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "send_eagain", "--interval", "500ms")
	h := startHelper(t, ns, "zerowin", 2*time.Second)
	h.run()
	if err := tr.stop(syscall.SIGTERM); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	evs := tr.eventsFor("send_eagain", h.PID)
	zero := 0
	for _, e := range evs {
		if e.Reason == "peer_zero_window" {
			zero++
		}
	}
	if zero == 0 {
		t.Fatalf("no peer_zero_window event from pid %d:\n%s\nstderr:\n%s", h.PID, dump(evs), tr.stderrText())
	}
	if got, want := sumCounts(evs), h.resultUint("eagains"); got != want {
		t.Errorf("counts add up to %d, the sender saw %d EAGAINs", got, want)
	}
}

// A sender spinning on EAGAIN makes hundreds of thousands of them a second:
// the output stays bounded by the interval, and nothing is lost from the
// counts.
func TestSendEAGAINSpinIsAggregatedExactly(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	const interval = 500 * time.Millisecond
	const run = 3 * time.Second
	tr := startTracer(t, "-e", "send_eagain", "--interval", interval.String())
	h := startHelper(t, ns, "spin", run)
	h.run()
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	evs := tr.eventsFor("send_eagain", h.PID)
	eagains := h.resultUint("eagains")
	if eagains < 10000 {
		t.Fatalf("the spin saw only %d EAGAINs; the test needs a storm", eagains)
	}
	if got := sumCounts(evs); got != eagains {
		t.Errorf("counts add up to %d, the sender saw %d EAGAINs:\n%s", got, eagains, dump(evs))
	}
	// One line at once, then at most one per interval, and the last one at
	// exit: the run plus the time to stop, in intervals, plus two.
	if max := int((run+2*time.Second)/interval) + 2; len(evs) > max {
		t.Errorf("%d lines for one connection in %v at %v intervals, want at most %d", len(evs), run, interval, max)
	}
	t.Logf("%d EAGAINs in %d lines", eagains, len(evs))
}

// --pid keeps the sender's events and nothing else: the same storm traced
// with --pid of the sender and with --pid of an unrelated process.
func TestSendEAGAINPIDFilter(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	other := startSleeper(t)
	h := startHelper(t, ns, "zerowin", 1500*time.Millisecond)
	mine := startTracer(t, "-e", "send_eagain", "--pid", itoa(h.PID))
	theirs := startTracer(t, "-e", "send_eagain", "--pid", itoa(other))
	h.run()
	mine.stop(syscall.SIGINT)
	theirs.stop(syscall.SIGINT)

	if got, want := sumCounts(mine.eventsFor("send_eagain", h.PID)), h.resultUint("eagains"); got != want || got == 0 {
		t.Errorf("--pid %d: counts add up to %d, the sender saw %d", h.PID, got, want)
	}
	if evs := theirs.eventsFor("send_eagain", 0); len(evs) != 0 {
		t.Errorf("--pid %d (unrelated) printed events:\n%s", other, dump(evs))
	}
	if evs := mine.eventsFor("send_eagain", 0); len(evs) != len(mine.eventsFor("send_eagain", h.PID)) {
		t.Errorf("--pid %d printed events of other processes:\n%s", h.PID, dump(evs))
	}
}

// --port keeps the connections with that local or remote port, -6 the IPv6
// ones: the same storm seen through three filters.
func TestSendEAGAINPortAndFamilyFilters(t *testing.T) {
	requireEvents(t, "send_eagain")
	ns := newNetns(t)
	h := startHelper(t, ns, "zerowin", 1500*time.Millisecond)
	other := h.Port + 1
	for other == h.LPort || other > 65535 {
		other = (other + 1) % 65536
	}
	byPort := startTracer(t, "-e", "send_eagain", "--port", itoa(h.Port))
	otherPort := startTracer(t, "-e", "send_eagain", "--port", itoa(other))
	v6 := startTracer(t, "-e", "send_eagain", "-6")
	h.run()
	for _, tr := range []*tracerRun{byPort, otherPort, v6} {
		tr.stop(syscall.SIGINT)
	}
	if got, want := sumCounts(byPort.eventsFor("send_eagain", h.PID)), h.resultUint("eagains"); got != want || got == 0 {
		t.Errorf("--port %d (the receiver's): %d EAGAINs counted, the sender saw %d", h.Port, got, want)
	}
	if evs := otherPort.eventsFor("send_eagain", h.PID); len(evs) != 0 {
		t.Errorf("--port %d printed the connection %d -> %d:\n%s", other, h.LPort, h.Port, dump(evs))
	}
	if evs := v6.eventsFor("send_eagain", h.PID); len(evs) != 0 {
		t.Errorf("-6 printed an IPv4 connection:\n%s", dump(evs))
	}
}

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
