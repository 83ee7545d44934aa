package tracer

import (
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

func TestDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		800 * time.Microsecond:  "800 µs",
		40 * time.Millisecond:   "40 ms",
		5200 * time.Millisecond: "5.2 s",
		63 * time.Second:        "63 s",
		-2 * time.Second:        "-2.0 s",
	} {
		if got := dur(d); got != want {
			t.Errorf("dur(%v) = %q, want %q", d, got, want)
		}
	}
}
