package tracer

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawBytes lays a record out as the kernel writes it into the ring buffer.
func rawBytes(r *tcptraceEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(r)), unsafe.Sizeof(*r))
}

func sampleRaw() tcptraceEvent {
	r := tcptraceEvent{TsNs: 5e9, Count: 1, Pid: 4242, Tid: 4243, Type: uint8(SendEAGAIN), Path: uint8(PathTracepoint), Ret: -11}
	copy(r.Comm[:], "proxy")
	s := &r.S
	s.Sk, s.Family, s.State = 0xffff888012345678, unix.AF_INET, 1
	copy(s.Saddr[:], []byte{10, 0, 0, 1})
	copy(s.Daddr[:], []byte{10, 0, 0, 2})
	s.Sport, s.Dport, s.Netns, s.Ino = 41000, 8080, 4026531840, 99
	s.Sndbuf, s.WmemQueued = 46080, 46592
	s.WriteSeq, s.SndNxt, s.SndUna = 3000, 2000, 500 // 1000 unsent, 1500 unacked
	s.SndWnd, s.SndCwnd, s.MssCache = 65535, 1, 1448
	s.PacketsOut, s.RetransOut, s.LostOut = 2, 1, 2
	s.SrttUs = 8 * 1500 // srtt is kept << 3
	s.NowJiffies = 1<<32 + 1000
	s.RcvTstamp = 1<<32 - 4000 // 5000 jiffies ago, across the 32-bit wrap
	s.Rto, s.TimerExpires, s.Pending = 3200, 1<<32+1000+12800, 1
	s.Retransmits, s.Backoff = 4, 4
	s.Nonagle = 1
	return r
}

func TestParseRawChecksSize(t *testing.T) {
	r := sampleRaw()
	b := rawBytes(&r)
	var got tcptraceEvent
	if err := parseRaw(b, &got); err != nil {
		t.Fatal(err)
	}
	if got != r {
		t.Errorf("round trip changed the record")
	}
	if err := parseRaw(b[:len(b)-1], &got); err == nil {
		t.Error("short record accepted")
	}
}

func TestDecodeSendEAGAIN(t *testing.T) {
	r := sampleRaw()
	d := &decoder{hz: 1000, bootWall: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)}
	e := d.decode(&r, tally{count: 1})

	if want := time.Date(2026, 1, 2, 3, 0, 5, 0, time.UTC); !e.Time.Equal(want) {
		t.Errorf("time %v, want %v", e.Time, want)
	}
	if e.Local != netip.MustParseAddrPort("10.0.0.1:41000") || e.Remote != netip.MustParseAddrPort("10.0.0.2:8080") || e.Family != 4 {
		t.Errorf("addresses %v -> %v family %d", e.Local, e.Remote, e.Family)
	}
	if e.PID != 4242 || e.Comm != "proxy" || e.Count != 1 || e.Type != SendEAGAIN {
		t.Errorf("task fields: %+v", e)
	}
	if e.Reason != ReasonUnackedRetransmitting {
		t.Errorf("reason %s", e.Reason)
	}
	want := map[string]any{
		"unacked_bytes": uint32(1500), "notsent_bytes": uint32(1000), "since_last_ack_ms": 5000.0,
		"rto_ms": 3200.0, "timer_in_ms": 12800.0, "timer": "retransmit", "srtt_us": int64(1500),
		"packets_in_flight": uint32(1), "nodelay": true, "cork": false, "rto_retransmits": uint8(4),
		"sndbuf_bytes": 46080, "probe": "tracepoint", "ret": int32(-11),
	}
	for k, v := range want {
		if e.Details[k] != v {
			t.Errorf("details[%s] = %#v, want %#v", k, e.Details[k], v)
		}
	}
}

func TestDecodeIPv6AndMapped(t *testing.T) {
	r := sampleRaw()
	r.S.Family = unix.AF_INET6
	r.S.Saddr = netip.MustParseAddr("2001:db8::1").As16()
	r.S.Daddr = netip.MustParseAddr("::ffff:192.0.2.7").As16()
	d := &decoder{hz: 250}
	e := d.decode(&r, tally{count: 1})
	if e.Family != 6 || e.Local.Addr().String() != "2001:db8::1" || e.Remote.Addr().String() != "192.0.2.7" {
		t.Errorf("got family %d %v -> %v", e.Family, e.Local, e.Remote)
	}
	if e.Details["rto_ms"] != 12800.0 { // 3200 jiffies at HZ=250
		t.Errorf("rto_ms at HZ=250: %v", e.Details["rto_ms"])
	}
}

func TestDecodeWithoutHZLeavesDurationsOut(t *testing.T) {
	r := sampleRaw()
	e := (&decoder{}).decode(&r, tally{count: 1})
	for _, k := range []string{"rto_ms", "since_last_ack_ms", "timer_in_ms"} {
		if _, ok := e.Details[k]; ok {
			t.Errorf("details has %s without HZ", k)
		}
	}
}
