package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// A second client behind the same address reusing a source port whose
// connection is still in TIME_WAIT on the server, with an older timestamp
// clock: its SYNs fail the PAWS check. rfc1337 keeps the TIME_WAIT socket
// alive through the resets its own duplicate ACKs draw.
func TestPawsRejectTimeWait(t *testing.T) {
	requireEvents(t, "paws_reject")
	chosen := requireTimeWaitPaws(t)
	ns := newNetns(t)
	ns.sysctl("net.ipv4.tcp_rfc1337", "1")
	// 6.16 gave TIME_WAIT rejects a counter of their own; before, PAWSEstab.
	counter := "PAWSTimewait"
	if _, ok := ns.netstat()[counter]; !ok {
		counter = "PAWSEstab"
	}
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "pawssyn", 0, helperCountEnv+"=3")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), counter)
	stopAll(t, tr)

	evs := tr.eventsFor("paws_reject", 0)
	t.Logf("helper %v, counters %v, path %s:\n%s", res, delta, chosen, dump(evs))
	if got := sumCounts(evs); got != delta[counter] || got != 3 {
		t.Fatalf("%s moved by %d; tcptrace: %d paws_reject, want 3; stderr:\n%s", counter, delta[counter], got, tr.stderrText())
	}
	cport, _ := strconv.Atoi(res["cport"])
	tsval, _ := strconv.ParseFloat(res["tsval"], 64)
	for _, e := range evs {
		if e.PID != h.PID || e.LPort != h.Port || e.RPort != cport || e.RAddr != "127.0.0.1" || e.Reason != "timewait_paws" {
			t.Errorf("unexpected paws_reject (listener pid %d port %d, client port %d): %s", h.PID, h.Port, cport, dump([]event{e}))
		}
		if r, _ := e.Details["drop_reason"].(string); (r != "TCP_RFC7323_TW_PAWS" && !strings.HasPrefix(r, "none (TIME_WAIT before 6.16")) || e.Details["syn"] != true || e.Details["state"] != "TIME_WAIT" {
			t.Errorf("details %v", e.Details)
		}
		if got := detail(e, "tsval"); got < tsval || got > tsval+2 {
			t.Errorf("tsval %v, the SYNs carried %v..%v", got, tsval, tsval+2)
		}
		if behind := detail(e, "tsval_behind_by"); behind < 99000 || behind > 101000 {
			t.Errorf("tsval_behind_by %v, the SYNs were 100000 behind the client's clock", behind)
		}
		if !strings.Contains(e.Explanation, "NAT") {
			t.Errorf("explanation lacks the NAT case: %s", e.Explanation)
		}
	}
}

// The same NAT case on a live connection: in-window data segments with a
// timestamp older than the one the server holds are discarded by PAWS
// (TCP_RFC7323_PAWS, PAWSEstab), on every kernel with drop reasons (5.19+).
func TestPawsRejectEstablished(t *testing.T) {
	requireEvents(t, "paws_reject")
	chosen, _, _ := strings.Cut(probeHooks(t, "paws_reject"), "\n")
	if strings.Contains(chosen, "TIME_WAIT only") {
		why := "no drop reasons before 5.19: only PAWS in TIME_WAIT is visible: " + chosen
		if !inMatrix() {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	ns := newNetns(t)
	tr := startTracer(t, connEvents...)
	h := startHelper(t, ns, "pawsestab", 0, helperCountEnv+"=3")
	before := ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.netstat(), "PAWSEstab", "PAWSOldAck")
	stopAll(t, tr)

	evs := tr.eventsFor("paws_reject", 0)
	t.Logf("helper %v, counters %v:\n%s", res, delta, dump(evs))
	if res["delivered"] != "0" {
		t.Fatalf("the stale segments reached the application: %v", res)
	}
	if got := sumCounts(evs); got != delta["PAWSEstab"] || got != 3 {
		t.Fatalf("PAWSEstab moved by %d; tcptrace: %d paws_reject, want 3; stderr:\n%s", delta["PAWSEstab"], got, tr.stderrText())
	}
	tsval, _ := strconv.ParseFloat(res["tsval"], 64)
	for _, e := range evs {
		if e.PID != h.PID || e.LPort != h.Port || e.RPort != h.LPort || e.Reason != "established_paws" {
			t.Errorf("unexpected paws_reject (pid %d, server port %d, client port %d): %s", h.PID, h.Port, h.LPort, dump([]event{e}))
		}
		if e.Details["drop_reason"] != "TCP_RFC7323_PAWS" || e.Details["syn"] != false {
			t.Errorf("details %v", e.Details)
		}
		if got := detail(e, "tsval"); got < tsval || got > tsval+2 {
			t.Errorf("tsval %v, the segments carried %v..%v", got, tsval, tsval+2)
		}
		// The socket's own timestamp is known where the tracepoint passes it (6.11+).
		if behind, ok := e.Details["tsval_behind_by"].(float64); ok && (behind < 99000 || behind > 101000) {
			t.Errorf("tsval_behind_by %v, the segments were 100000 behind the client's clock", behind)
		}
	}
}

// requireTimeWaitPaws skips (in the kernel matrix only) where the chosen
// paws_reject path cannot see a TIME_WAIT socket's rejects; it returns the
// path's line of --list-probes.
func requireTimeWaitPaws(t *testing.T) string {
	t.Helper()
	chosen, _, _ := strings.Cut(probeHooks(t, "paws_reject"), "\n")
	if strings.Contains(chosen, "not in TIME_WAIT") {
		why := "before 6.16 a TIME_WAIT PAWS reject has no drop reason, and this path reads drop reasons only: " + chosen
		if !inMatrix() {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	return chosen
}
