package tracer

import (
	"net/netip"
	"os"
	"path/filepath"
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

// The SYN schedule against what the kernel did: measured on this host
// (6.18, tcp_syn_linear_timeouts=4: tcp_syn_retries=2 gave 5 retransmits 1 s
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
	if e.Type != SynRetransmit || e.Reason != ReasonNoSynAck || e.PID != 4242 || e.Comm != "proxy" {
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
	if e.Reason != ReasonResetAnswer || e.Details["errno"] != "ECONNREFUSED" || !strings.Contains(e.Explanation, "nothing listens on port 5432") {
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

func TestDecodePortExhaustion(t *testing.T) {
	r := sampleConnRaw(PortExhaustion)
	r.Ret = -int32(unix.EADDRNOTAVAIL)
	r.C.Sport = 0
	r.C.LimitsKnown = uint8(tcptraceConnLimitsLIMIT_PORTS | tcptraceConnLimitsLIMIT_TW)
	r.C.PortLo, r.C.PortHi, r.C.TwReuse = 32768, 60999, 2
	r.C.TwCount, r.C.MaxTwBuckets = 28232, 262144
	r.Pid = 0 // no process to read /proc from: the destination count is left out
	r.C.OwnerKnown = 0
	e := (&decoder{hz: 250}).decode(&r, tally{count: 17})
	for _, want := range []string{"EADDRNOTAVAIL (17 times)", "32768-60999 (28232 ports)", "28232 sockets in TIME_WAIT", "tcp_tw_reuse=2 (loopback only)", "tcp_tw_recycle (removed in Linux 4.12)", "lowering tcp_max_tw_buckets"} {
		if !strings.Contains(e.Explanation, want) {
			t.Errorf("explanation lacks %q: %s", want, e.Explanation)
		}
	}
	if e.Details["local_ports"] != 28232 || e.Details["timewait_in_netns"] != uint32(28232) || e.Details["timewait_to_destination"] != nil {
		t.Errorf("details %v", e.Details)
	}
}

func TestDecodePawsAndReset(t *testing.T) {
	d := &decoder{hz: 250, conn: &connFacts{dropReasons: map[uint32]string{38: "TCP_RFC7323_TW_PAWS", 36: "TCP_RFC7323_PAWS"}, rstReasons: map[uint32]string{3: "TCP_ABORT_ON_CLOSE"}}}
	r := sampleConnRaw(PawsReject)
	r.C.DropReason, r.C.TcpFlags, r.C.State = 38, 0x02, 6
	r.C.TsSeen, r.C.Tsval, r.C.TsRecentKnown, r.C.TsRecent = 1, 1000, 1, 101000
	e := d.decode(&r, tally{count: 2})
	if e.Reason != ReasonPawsTimewait || e.Details["tsval_behind_by"] != int32(100000) || e.Details["syn"] != true {
		t.Errorf("paws: %v %v", e.Reason, e.Details)
	}
	if !strings.Contains(e.Explanation, "SYN from 10.0.0.2:5432 dropped") || !strings.Contains(e.Explanation, "NAT") || !strings.Contains(e.Explanation, "100000 behind the 101000") {
		t.Errorf("paws explanation: %s", e.Explanation)
	}
	r.C.DropReason = 36
	if e := d.decode(&r, tally{count: 1}); e.Reason != ReasonPawsEstablished {
		t.Errorf("TCP_RFC7323_PAWS classified %v", e.Reason)
	}

	r = sampleConnRaw(Reset)
	r.C.Side, r.C.State, r.C.Unread, r.C.RstReasonKnown, r.C.RstReason = 1, 7, 32, 1, 3
	e = d.decode(&r, tally{count: 1})
	if e.Reason != ReasonResetSent || e.Details["rst_reason"] != "TCP_ABORT_ON_CLOSE" || !strings.Contains(e.Explanation, "32 bytes unread") {
		t.Errorf("reset sent: %s %v", e.Explanation, e.Details)
	}
	r.C.Side, r.C.State, r.C.RstReasonKnown = 2, 1, 0
	e = d.decode(&r, tally{count: 1})
	if e.Reason != ReasonResetReceived || e.Details["rst_reason"] != nil || !strings.Contains(e.Explanation, "in state ESTABLISHED") {
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

func TestCountTimeWait(t *testing.T) {
	// Two TIME_WAIT sockets to 127.0.0.1:8080, one ESTABLISHED, one
	// TIME_WAIT elsewhere (format of /proc/net/tcp).
	body := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:9C40 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   1: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
   2: 0100007F:9C42 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000
   3: 0100007F:9C43 0200007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`
	path := filepath.Join(t.TempDir(), "tcp")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := countTimeWait(path, netip.MustParseAddrPort("127.0.0.1:8080"))
	if err != nil || n != 2 {
		t.Errorf("counted %d (%v), want 2", n, err)
	}
	v6, ok := parseProcAddr("0000000000000000FFFF00000100007F:1F90")
	if !ok || v6.Addr().Unmap() != netip.MustParseAddr("127.0.0.1") || v6.Port() != 8080 {
		t.Errorf("v4-mapped address parsed as %v", v6)
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

// Before 6.16 the fentry/kprobe paths recognise a TIME_WAIT PAWS reject
// themselves: no drop reason, and the line says so.
func TestDecodePawsRecomputed(t *testing.T) {
	r := sampleConnRaw(PawsReject)
	r.C.DropReason, r.C.TcpFlags, r.C.State = pawsRecomputed, 0x02, 6
	r.C.TsSeen, r.C.Tsval, r.C.TsRecentKnown, r.C.TsRecent = 1, 5, 1, 7
	e := (&decoder{hz: 250, conn: &connFacts{dropReasons: map[uint32]string{36: "TCP_RFC7323_PAWS"}}}).decode(&r, tally{count: 1})
	if e.Reason != ReasonPawsTimewait || !strings.HasPrefix(e.Details["drop_reason"].(string), "none (TIME_WAIT before 6.16") {
		t.Errorf("recomputed: %v %v", e.Reason, e.Details)
	}
	if strings.Contains(e.Explanation, "(TCP_RFC7323") || !strings.Contains(e.Explanation, "still in TIME_WAIT") {
		t.Errorf("explanation: %s", e.Explanation)
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
