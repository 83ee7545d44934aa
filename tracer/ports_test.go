package tracer

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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
