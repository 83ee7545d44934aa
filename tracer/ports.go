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

// The ports detector (bpf/ports.bpf.c): connect() found no free local port
// (EADDRNOTAVAIL).
const PortExhaustion EventType = EventType(tcptraceEventTypeEVENT_PORT_EXHAUSTION)

const reasonNoFreePort Reason = "no_free_local_port"

var portsDetector = &detector{
	name:    "ports",
	events:  []eventSpec{{PortExhaustion, "port_exhaustion"}},
	reasons: []Reason{reasonNoFreePort},
	probes: []probeSet{
		{
			events: []EventType{PortExhaustion},
			paths: []pathSpec{
				{path: PathTracepoint, hooks: "tp_btf/inet_sock_set_state: SYN_SENT to CLOSE with no local port (no free port; not a bound socket's taken 4-tuple)",
					progs: attach("tp_inet_sock_set_state"), enable: hookPorts},
				{path: PathFentry, hooks: "fexit/inet_hash_connect, inet6_hash_connect",
					progs: attach("fexit_inet_hash_connect", "fexit_inet6_hash_connect")},
				{path: PathKprobe, hooks: "kprobe+kretprobe/inet_hash_connect, inet6_hash_connect",
					progs: attach("kprobe_inet_hash_connect", "kretprobe_inet_hash_connect", "kprobe_inet6_hash_connect", "kretprobe_inet6_hash_connect")},
			},
		},
	},
	needs:   needs{owners: true, connFacts: true},
	decode:  decodePorts,
	explain: func(e Event, t tally) string { return explainPorts(&e.conn, e.Remote, t.count) },
}

func decodePorts(d *decoder, r *tcptraceEvent, t tally) Event {
	e := decodeConn(d, r, t)
	e.Reason = reasonNoFreePort
	if e.PID != 0 {
		e.conn.TwToDest = timeWaitTo(e.PID, e.Remote)
	}
	c, dt := &e.conn, e.Details
	dt["errno"] = "EADDRNOTAVAIL"
	if c.PortsKnown {
		dt["ip_local_port_range"] = fmt.Sprintf("%d %d", c.PortLo, c.PortHi)
		dt["local_ports"] = c.portCount()
		dt["tcp_tw_reuse"] = c.TwReuse
	}
	if c.TwToDest >= 0 {
		dt["timewait_to_destination"] = c.TwToDest
	}
	timewaitDetails(dt, c)
	return e
}

// portCount is the size of ip_local_port_range (connect() uses every port
// of it; bind(0) the other half since 4.6, but both exhaust it).
func (c *connState) portCount() int {
	if c.PortHi < c.PortLo {
		return 0
	}
	return int(c.PortHi-c.PortLo) + 1
}

func explainPorts(c *connState, remote netip.AddrPort, count uint64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "connect() to %s failed with EADDRNOTAVAIL", remote)
	if count > 1 {
		fmt.Fprintf(&b, " (%d times)", count)
	}
	b.WriteString(": no free local port")
	if c.PortsKnown {
		fmt.Fprintf(&b, " in net.ipv4.ip_local_port_range %d-%d (%d ports)", c.PortLo, c.PortHi, c.portCount())
	}
	if c.TwKnown {
		fmt.Fprintf(&b, "; %d sockets in TIME_WAIT in the namespace", c.TwCount)
		if c.TwToDest >= 0 {
			fmt.Fprintf(&b, ", %d of them to %s", c.TwToDest, remote)
		}
		b.WriteString(", each holding its port for 60 s after an active close")
	}
	if c.PortsKnown {
		fmt.Fprintf(&b, "; net.ipv4.tcp_tw_reuse=%d", c.TwReuse)
		switch c.TwReuse {
		case 0:
			b.WriteString(" (off)")
		case 2:
			b.WriteString(" (loopback only)")
		}
	}
	b.WriteString(". What helps: reuse connections (keep-alive, pooling) instead of one per request, a wider ip_local_port_range, net.ipv4.tcp_tw_reuse=1 (outgoing connections, needs TCP timestamps), more destination addresses or ports, or let the server close first so TIME_WAIT lands there. What does not: tcp_tw_recycle (removed in Linux 4.12), lowering tcp_max_tw_buckets (it destroys TIME_WAIT state early and risks mixing old segments into new connections)")
	b.WriteString(".")
	return b.String()
}

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
