package tracer

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// timeWaitTo counts the TIME_WAIT sockets to one destination in the network
// namespace of a process, from /proc/<pid>/net/tcp{,6} (which shows that
// process's namespace). -1 when the process is gone or the files unreadable.
// Counting them in BPF would mean walking the established hash per event.
func timeWaitTo(pid uint32, dst netip.AddrPort) int {
	n, ok := 0, false
	for _, f := range []string{"tcp", "tcp6"} {
		c, err := countTimeWait(fmt.Sprintf("/proc/%d/net/%s", pid, f), dst)
		if err != nil {
			continue
		}
		n, ok = n+c, true
	}
	if !ok {
		return -1
	}
	return n
}

const tcpTimeWait = "06" // st column of /proc/net/tcp

func countTimeWait(path string, dst netip.AddrPort) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != tcpTimeWait {
			continue
		}
		if ap, ok := parseProcAddr(fields[2]); ok && ap.Addr().Unmap() == dst.Addr().Unmap() && ap.Port() == dst.Port() {
			n++
		}
	}
	return n, sc.Err()
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel's 32-bit
// words printed in host (little-endian) order, then the port in hex.
func parseProcAddr(s string) (netip.AddrPort, bool) {
	a, p, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, false
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.AddrPort{}, false
	}
	raw, err := hex.DecodeString(a)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	addr, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(addr, uint16(port)), true
}
