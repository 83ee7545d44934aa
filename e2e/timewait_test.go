package e2e

import "testing"

// tcp_max_tw_buckets=4 and 12 short connections closed by the client: the
// first 4 get their TIME_WAIT socket, the others are closed at once,
// counted in TCPTimeWaitOverflow.
func TestTimeWaitOverflow(t *testing.T) {
	requireEvents(t, "timewait_overflow")
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_max_tw_buckets", "4")
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "shortconns", 0, helperCountEnv+"=12")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "TCPTimeWaitOverflow")
	stopAll(t, tr)

	evs := tr.eventsFor("timewait_overflow", 0)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if res["connected"] != "12" || delta["TCPTimeWaitOverflow"] == 0 {
		t.Fatalf("no overflow happened: %v %v", res, delta)
	}
	if got := sumCounts(evs); got != delta["TCPTimeWaitOverflow"] {
		t.Fatalf("TCPTimeWaitOverflow moved by %d; tcptrace: %d timewait_overflow; stderr:\n%s", delta["TCPTimeWaitOverflow"], got, tr.stderrText())
	}
	for _, e := range evs {
		if e.PID != h.PID || e.RPort != h.Port || e.Reason != "tw_buckets_full" {
			t.Errorf("unexpected timewait_overflow (client pid %d, server port %d): %s", h.PID, h.Port, dump([]event{e}))
		}
		if detail(e, "tcp_max_tw_buckets") != 4 || detail(e, "timewait_in_netns") != 4 {
			t.Errorf("details %v, want tcp_max_tw_buckets 4 and 4 in TIME_WAIT", e.Details)
		}
	}
}
