package tracer

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func secs(v ...float64) []time.Duration {
	var out []time.Duration
	for _, s := range v {
		out = append(out, time.Duration(s*float64(time.Second)))
	}
	return out
}

// The SYN schedule against what the kernel did: measured on a 6.18 kernel
// (tcp_syn_linear_timeouts=4: tcp_syn_retries=2 gave 5 retransmits 1 s
// apart and ETIMEDOUT after 7.1 s), the 6.12 defaults (10 retransmits,
// about 131 s), and the documented pre-6.5 defaults (1, 3, 7, 15, 31, 63 s,
// ETIMEDOUT at 127 s).
func TestSynSchedule(t *testing.T) {
	for _, tc := range []struct {
		name   string
		m      synModel
		rtx    []time.Duration
		giveUp time.Duration
		maxRtx int
	}{
		{"retries 2, linear 4", synModel{retries: 2, linear: 4}, secs(1, 2, 3, 4, 5), 7 * time.Second, 5},
		{"retries 6, linear 4", synModel{retries: 6, linear: 4}, secs(1, 2, 3, 4, 5, 7, 11, 19, 35, 67), 131 * time.Second, 10},
		{"retries 6, before linear timeouts", synModel{retries: 6}, secs(1, 3, 7, 15, 31, 63), 127 * time.Second, 6},
		{"TCP_USER_TIMEOUT 3 s", synModel{retries: 6, linear: 4, userTimeout: 3 * time.Second}, secs(1, 2), 3 * time.Second, 2},
		{"TCP_USER_TIMEOUT 10 s past linear", synModel{retries: 6, linear: 4, userTimeout: 10 * time.Second}, secs(1, 2, 3, 4, 5, 7), 10 * time.Second, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rtx, giveUp := tc.m.schedule()
			if len(rtx) != tc.maxRtx || giveUp != tc.giveUp {
				t.Fatalf("retransmits %v, gives up at %v; want %v, %v", rtx, giveUp, tc.rtx, tc.giveUp)
			}
			for i := range rtx {
				if rtx[i] != tc.rtx[i] {
					t.Errorf("retransmit %d at %v, want %v", i+1, rtx[i], tc.rtx[i])
				}
			}
		})
	}
	// Documentation/networking/ip-sysctl.rst: tcp_syn_retries=6 "corresponds
	// to 63 seconds till the last retransmission ... the final timeout ...
	// will happen after 127 seconds"; past 6 doublings each step is
	// TCP_RTO_MAX.
	for boundary, want := range map[int]time.Duration{6: 127 * time.Second, 7: 247 * time.Second} {
		if got := modelTimeout(boundary, tcpRTOMax); got != want {
			t.Errorf("tcp_model_timeout(%d, 1 s) = %v, want %v", boundary, got, want)
		}
	}
}

func sampleConnRaw(typ EventType) tcptraceEvent {
	r := tcptraceEvent{TsNs: 1e9, Pid: 4242, Tid: 4243, Type: uint8(typ), Path: uint8(PathTracepoint)}
	copy(r.Comm[:], "proxy")
	c := &r.C
	c.Sk, c.Netns, c.Ino, c.Family = 0xffff888000002000, 4026531840, 99, unix.AF_INET
	copy(c.Saddr[:], []byte{10, 0, 0, 1})
	copy(c.Daddr[:], []byte{10, 0, 0, 2})
	c.Sport, c.Dport = 40001, 5432
	c.OwnerKnown, c.StartKnown = 1, 1
	c.State = 2
	return r
}

func TestDecodeSynRetransmit(t *testing.T) {
	r := sampleConnRaw(SynRetransmit)
	r.C.ElapsedNs = uint64(3 * time.Second)
	r.C.SynRtx = 3
	r.C.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_SYN | tcptraceConnLimitsLIMIT_SYN_LINEAR)
	r.C.SynRetries, r.C.SynLinearTimeouts = 6, 4
	e := (&decoder{hz: 250, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 1})
	if e.Type != SynRetransmit || e.Reason != reasonNoSynAck || e.PID != 4242 || e.Comm != "proxy" {
		t.Fatalf("event %+v", e)
	}
	if e.Remote != netip.MustParseAddrPort("10.0.0.2:5432") {
		t.Errorf("remote %v", e.Remote)
	}
	for k, v := range map[string]any{"syn_retransmits": uint32(3), "tcp_syn_retries": uint8(6), "tcp_syn_linear_timeouts": uint8(4),
		"gives_up_after_ms": int64(131000), "syn_retransmits_max": 10, "backoff_ms": int64(1000), "next_retransmit_in_ms": int64(1000),
		"since_connect_ms": 3000.0, "state": "SYN_SENT"} {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
	for _, want := range []string{"retransmit 3, 3.0 s after connect()", "gives up 131 s after the first SYN, after 10 retransmits", "tcp_syn_retries=6", "tcp_syn_linear_timeouts=4"} {
		if !strings.Contains(e.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, e.Explanation)
		}
	}
	// TCP_SYNCNT overrides the sysctl, and says so.
	r.C.Syncnt = 2
	e = (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if !strings.Contains(e.Explanation, "TCP_SYNCNT=2 (net.ipv4.tcp_syn_retries=6 does not apply)") || e.Details["gives_up_after_ms"] != int64(7000) {
		t.Errorf("TCP_SYNCNT: %s %v", e.Explanation, e.Details["gives_up_after_ms"])
	}
}

func TestDecodeConnectOutcome(t *testing.T) {
	r := sampleConnRaw(ConnectRefused)
	r.Ret = -int32(unix.ECONNREFUSED)
	r.C.ElapsedNs = uint64(300 * time.Microsecond)
	e := (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if e.Reason != reasonResetAnswer || e.Details["errno"] != "ECONNREFUSED" || !strings.Contains(e.Explanation, "nothing listens on port 5432") {
		t.Errorf("refused: %s %v", e.Explanation, e.Details)
	}
	if _, ok := e.Details["gives_up_after_ms"]; ok {
		t.Errorf("a refused connect has no give-up time: %v", e.Details)
	}
	r = sampleConnRaw(ConnectTimeout)
	r.Ret = -int32(unix.ETIMEDOUT)
	r.C.SynRtx = 5
	r.C.ElapsedNs = uint64(7100 * time.Millisecond)
	r.C.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_SYN)
	r.C.SynRetries = 2
	r.C.UserTimeoutMs = 0
	e = (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if e.Details["errno"] != "ETIMEDOUT" || !strings.Contains(e.Explanation, "after 7.1 s and 5 SYN retransmits") || e.Details["tcp_syn_linear_timeouts"] != nil {
		t.Errorf("timeout: %s %v", e.Explanation, e.Details)
	}
}

// A SYN retransmit the IP layer refused, and one line standing for several
// counted retransmits (the failed ones the pre-6.17 tracepoint did not see).
func TestDecodeSynRetransmitFailures(t *testing.T) {
	r := sampleConnRaw(SynRetransmit)
	r.C.SynRtx = 2
	r.Ret = -int32(unix.EPERM)
	e := (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if e.Details["transmit_error"] != "EPERM" || !strings.Contains(e.Explanation, "never left this host") || strings.Contains(e.Explanation, "no SYN-ACK") {
		t.Errorf("refused transmit: %s %v", e.Explanation, e.Details)
	}
	r.Ret, r.Count = 1, 3 // NET_XMIT_DROP
	e = (&decoder{hz: 250}).decode(&r, tally{count: 3})
	if e.Details["transmit_error"] != "NET_XMIT_DROP" || !strings.Contains(e.Explanation, "3 retransmits since the last line, 2 of them refused") {
		t.Errorf("several counted: %s %v", e.Explanation, e.Details)
	}
	r.Ret, r.Count = 0, 1
	e = (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if _, ok := e.Details["transmit_error"]; ok || !strings.Contains(e.Explanation, "no SYN-ACK came back") {
		t.Errorf("clean retransmit: %s %v", e.Explanation, e.Details)
	}
}

// Many connections retransmitting to one destination: one line with the
// count and the range of attempts, the latest connection's numbers beside.
func TestDecodeSynRetransmitCrowded(t *testing.T) {
	r := sampleConnRaw(SynRetransmit)
	r.C.SynRtx, r.C.ElapsedNs, r.Count = 3, uint64(3*time.Second), 1
	r.C.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_SYN | tcptraceConnLimitsLIMIT_SYN_LINEAR)
	r.C.SynRetries, r.C.SynLinearTimeouts = 2, 4
	e := (&decoder{hz: 250}).decode(&r, tally{count: 37, attemptLo: 2, attemptHi: 3})
	if e.Count != 37 || e.Details["attempt_min"] != uint32(2) || e.Details["attempt_max"] != uint32(3) || e.Details["syn_retransmits"] != uint32(3) {
		t.Errorf("details %v", e.Details)
	}
	for _, want := range []string{"SYN to 10.0.0.2:5432 retransmitted 37 times by connections retransmitting to it at once (retransmits 2 to 3 of their connect()s; the latest 3.0 s after its connect())",
		"gives up 7.0 s after the first SYN, after 5 retransmits (net.ipv4.tcp_syn_retries=2"} {
		if !strings.Contains(e.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, e.Explanation)
		}
	}
	if strings.Contains(e.Explanation, "this one") {
		t.Errorf("the backoff of one connection is not the line's: %s", e.Explanation)
	}
	// A line of its own keeps its form, without the range keys.
	e = (&decoder{hz: 250}).decode(&r, tally{count: 1})
	if _, ok := e.Details["attempt_min"]; ok || !strings.Contains(e.Explanation, "(retransmit 3, 3.0 s after connect())") {
		t.Errorf("lone line: %s %v", e.Explanation, e.Details)
	}
}

func TestAttemptRange(t *testing.T) {
	var printed, now synAttempts
	printed[0], now[0] = 5, 5 // attempt 1: nothing new
	now[1], now[2] = 4, 1     // attempts 2 and 3 grew
	if lo, hi := attemptRange(&printed, &now, 3); lo != 2 || hi != 3 {
		t.Errorf("range %d..%d, want 2..3", lo, hi)
	}
	printed = now
	if lo, hi := attemptRange(&printed, &now, 3); lo != 0 || hi != 0 {
		t.Errorf("nothing grew, range %d..%d", lo, hi)
	}
	now[len(now)-1]++ // the last slot holds later attempts too
	if lo, hi := attemptRange(&printed, &now, 40); lo != 32 || hi != 40 {
		t.Errorf("range %d..%d, want 32..40", lo, hi)
	}
}

func TestWriteSynRetransmitsUnseen(t *testing.T) {
	var b bytes.Buffer
	WriteSynRetransmitsUnseen(&b, 0)
	if b.Len() != 0 {
		t.Errorf("none unseen, got %q", b.String())
	}
	WriteSynRetransmitsUnseen(&b, 2)
	if got := b.String(); !strings.HasPrefix(got, "  SYN retransmits not seen: 2:") || strings.Count(got, "\n") != 1 {
		t.Errorf("got %q", got)
	}
}
