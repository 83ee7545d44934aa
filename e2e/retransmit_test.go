package e2e

import (
	"fmt"
	"testing"
	"time"
)

// The path-outage story: two ends of one connection exchange data in both
// directions (TCP_NODELAY, non-blocking); every segment between them is
// dropped for 7 s, then the path comes back. Each end's retransmission timer
// fires again and again with a growing backoff, then the queue is resent in
// slow start. tcptrace's lines, by kind, add up to the namespace's counters:
// every data retransmission to RetransSegs less TCPSynRetrans (the socket's
// total_retrans, which the kernel bumps on the same line), the timeouts to
// TCPTimeouts (one segment per firing here: no SYN, no zero window, no
// give-up), the queue's to TCPFastRetrans and TCPSlowStartRetrans, which
// count the same retransmissions. The lines name the helper, although the
// timer fires in softirq context.
func TestRetransmitOutage(t *testing.T) {
	requireEvents(t, "retransmit")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "retransmit")
	h := startHelper(t, ns, "exchange", 12*time.Second)
	before, beforeExt := ns.snmp(), ns.netstat()
	fmt.Fprintln(h.stdin, "GO")
	time.Sleep(time.Second)
	ns.nft(fmt.Sprintf(`table ip tcptrace_e2e_cut {
		chain in { type filter hook input priority 0; tcp dport %d drop; tcp sport %d drop; }
	}`, h.Port, h.Port))
	time.Sleep(7 * time.Second)
	ns.run("nft", "delete", "table", "ip", "tcptrace_e2e_cut")
	res := h.line("RESULT")
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	delta := counterDelta(before, ns.snmp(), "RetransSegs")
	ext := counterDelta(beforeExt, ns.netstat(), "TCPSynRetrans", "TCPTimeouts", "TCPFastRetrans", "TCPSlowStartRetrans", "TCPLossProbes")
	stopAll(t, tr)

	evs := tr.eventsFor("retransmit", h.PID)
	t.Logf("helper %v, RetransSegs %d, %v:\n%s", res, delta["RetransSegs"], ext, dump(evs))
	by := countBy(evs)
	if want := delta["RetransSegs"] - ext["TCPSynRetrans"]; sumCounts(evs) != want || want == 0 {
		t.Errorf("retransmit counted %d segments, RetransSegs less TCPSynRetrans moved by %d", sumCounts(evs), want)
	}
	if by["timeout"] != ext["TCPTimeouts"] || by["fast"] != ext["TCPFastRetrans"] || by["slow_start"] != ext["TCPSlowStartRetrans"] {
		t.Errorf("by kind %v; TCPTimeouts %d, TCPFastRetrans %d, TCPSlowStartRetrans %d",
			by, ext["TCPTimeouts"], ext["TCPFastRetrans"], ext["TCPSlowStartRetrans"])
	}
	// Both ends retransmitted on timeouts, each with a growing backoff.
	for _, port := range []int{h.LPort, h.Port} {
		var backoffs []float64
		for _, e := range evs {
			if e.LPort == port && e.Reason == "timeout" {
				backoffs = append(backoffs, detail(e, "rto_retransmits"))
				if e.Details["owner_known"] != true || e.PID != h.PID {
					t.Errorf("timeout on port %d not named after its owner: %s", port, dump([]event{e}))
				}
			}
		}
		if len(backoffs) < 2 || backoffs[len(backoffs)-1] <= backoffs[0] {
			t.Errorf("port %d: timeouts in a row %v, want at least two lines with the count growing", port, backoffs)
		}
	}
}

// A lossy path: one data segment in 50 to the receiver is dropped while a
// bulk sender runs. Loss recovery resends them (fast), with a tail loss
// probe or a timeout now and then; every kind adds up to the kernel's
// counter of it, and the whole to RetransSegs less TCPSynRetrans. A tail
// loss probe is counted by TCPLossProbes, which also counts probes that
// sent new data: at most that many.
func TestRetransmitLossyPath(t *testing.T) {
	requireEvents(t, "retransmit")
	ns := newNetns(t)
	tr := startTracer(t, "-e", "retransmit")
	h := startHelper(t, ns, "bulk", 3*time.Second)
	ns.nft(fmt.Sprintf(`table ip tcptrace_e2e_loss {
		chain in { type filter hook input priority 0; tcp dport %d meta length > 200 numgen inc mod 50 == 0 drop; }
	}`, h.Port))
	before, beforeExt := ns.snmp(), ns.netstat()
	res := h.run()
	delta := counterDelta(before, ns.snmp(), "RetransSegs")
	ext := counterDelta(beforeExt, ns.netstat(), "TCPSynRetrans", "TCPTimeouts", "TCPFastRetrans", "TCPSlowStartRetrans", "TCPLossProbes")
	stopAll(t, tr)

	evs := tr.eventsFor("retransmit", h.PID)
	by := countBy(evs)
	t.Logf("helper %v, RetransSegs %d, %v, by kind %v", res, delta["RetransSegs"], ext, by)
	if want := delta["RetransSegs"] - ext["TCPSynRetrans"]; sumCounts(evs) != want {
		t.Errorf("retransmit counted %d segments, RetransSegs less TCPSynRetrans moved by %d", sumCounts(evs), want)
	}
	if by["fast"] == 0 || by["fast"] != ext["TCPFastRetrans"] || by["slow_start"] != ext["TCPSlowStartRetrans"] ||
		by["timeout"] != ext["TCPTimeouts"] || by["loss_probe"] > ext["TCPLossProbes"] || by["other"] != 0 {
		t.Errorf("by kind %v; TCPFastRetrans %d, TCPSlowStartRetrans %d, TCPTimeouts %d, TCPLossProbes %d",
			by, ext["TCPFastRetrans"], ext["TCPSlowStartRetrans"], ext["TCPTimeouts"], ext["TCPLossProbes"])
	}
	for _, e := range evs {
		if e.LPort != h.LPort || e.RPort != h.Port || e.Details["owner_known"] != true {
			t.Errorf("retransmit not on the sender's connection or not named after it: %s", dump([]event{e}))
		}
	}
}
