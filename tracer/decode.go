package tracer

import (
	"bytes"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawEventSize is what the kernel writes per record; a record of any other
// size is refused rather than read past its end.
var rawEventSize = int(unsafe.Sizeof(tcptraceEvent{}))

// parseRaw copies a ring buffer sample into the generated struct. The size
// is checked first; the copy (not a cast) leaves the sample's memory free for
// the reader to reuse. binary.Read would do the same through reflection at
// ten times the cost, on the path that must keep up with an event storm.
func parseRaw(sample []byte, r *tcptraceEvent) error {
	if len(sample) != rawEventSize {
		return fmt.Errorf("ring buffer record of %d bytes, want %d", len(sample), rawEventSize)
	}
	*r = *(*tcptraceEvent)(unsafe.Pointer(&sample[0]))
	return nil
}

// decoder turns raw records into Events: it knows the kernel's HZ and how
// to map bpf_ktime_get_ns() (CLOCK_MONOTONIC) onto wall-clock time.
type decoder struct {
	hz       uint64
	bootWall time.Time // wall-clock time at monotonic zero
	// owners resolves a socket inode to its process when the kernel did
	// not know the owner (nil: leave it unknown).
	owners *inodeOwners
	// conn names the kernel's drop and reset reasons (connection events).
	conn *connFacts
	// fates: recent SYNs refused on this host, for syn_retransmit's cause
	// (nil: not kept).
	fates *synFates
	// cgroups names the cgroup ids the kernel records (nil: left out);
	// names asks the runtime for a container's names (nil: not asked).
	cgroups *cgroups
	names   *runtimeNames
}

func newDecoder(hz uint64) *decoder {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	d := &decoder{hz: hz, bootWall: time.Now().Add(-time.Duration(ts.Nano())), fates: newSynFates(), cgroups: newCgroups(), names: newRuntimeNames()}
	// A walk of the hierarchy, made when an event names a cgroup not seen
	// yet, also tells which containers are gone.
	d.cgroups.gone = d.names.forget
	return d
}

func (d *decoder) wall(ktimeNs uint64) time.Time {
	return d.bootWall.Add(time.Duration(ktimeNs))
}

// tally is what one line stands for: how many occurrences and, for
// send_blocked, how long they waited. It comes from the record itself or,
// for a periodic line, from the aggregation table.
type tally struct {
	count      uint64
	wait       time.Duration
	maxWait    time.Duration
	inProgress bool // a send still blocked when the line was printed
	// syn_retransmit aggregated per destination: the lowest and highest
	// attempt number among the retransmits counted (0: a line of its own).
	attemptLo, attemptHi uint32
}

// decode builds the public Event: its detector's decode, then its
// explanation. A type no detector reports gets the record's own fields.
func (d *decoder) decode(r *tcptraceEvent, t tally) Event {
	det := detectorOf(EventType(r.Type))
	if det == nil {
		return Event{Time: d.wall(r.TsNs), Type: EventType(r.Type), Count: t.count, Path: ProbePath(r.Path),
			Details: map[string]any{"probe": ProbePath(r.Path).String()}}
	}
	e := det.decode(d, r, t)
	e.Explanation = det.explain(e, t)
	e.tally = t
	// The kernel records the cgroup of the process it names; a process
	// found in /proc instead brings its own.
	if e.PID != 0 && e.PID == r.Pid && e.Cgroup == "" {
		d.nameCgroup(&e, r.Cgroup)
	}
	return e
}

// ownerByInode names the event after the process that holds the socket
// inode, found in /proc, when the kernel did not know the owner.
func (d *decoder) ownerByInode(e *Event, ino uint32) {
	p := d.owners.lookup(ino)
	e.PID, e.Comm = p.pid, p.comm
	if p.pid != 0 && p.cgroup != "" {
		d.nameContainer(e, p.cgroup)
	}
}

// nameCgroup fills the event's cgroup path and the container and pod it
// names.
func (d *decoder) nameCgroup(e *Event, id uint64) {
	if p, ok := d.cgroups.path(id); ok {
		d.nameContainer(e, p)
	}
}

// nameContainer fills the event's cgroup path, the container and pod it
// names, and their names where the runtime knows them.
func (d *decoder) nameContainer(e *Event, path string) {
	e.Cgroup = path
	e.ContainerID, e.PodUID = containerOf(path)
	if e.ContainerID != "" {
		n := d.names.names(e.ContainerID)
		e.Container, e.Pod, e.PodNamespace = n.container, n.pod, n.podNamespace
	}
}

// connEvent is what every event about one connection carries: the task,
// the addresses and the socket's snapshot.
func (d *decoder) connEvent(r *tcptraceEvent, t tally) Event {
	e := Event{
		Time:  d.wall(r.TsNs),
		Type:  EventType(r.Type),
		PID:   r.Pid,
		Comm:  cString(r.Comm[:]),
		NetNS: r.S.Netns,
		Count: t.count,
		Path:  ProbePath(r.Path),
		snap:  newSnapshot(&r.S, d.hz),
	}
	e.Family, e.Local, e.Remote = addrPair(r.S.Family, r.S.Saddr, r.S.Daddr, r.S.Sport, r.S.Dport)
	return e
}

// addrPair reads a pair of addresses as the BPF side stores them: an IPv4
// address in the first 4 bytes, an IPv6 one (v4-mapped for an IPv4 peer of
// a dual-stack socket) in all 16.
func addrPair(family uint16, local, remote [16]byte, lport, rport uint16) (int, netip.AddrPort, netip.AddrPort) {
	if family == unix.AF_INET6 {
		return 6, netip.AddrPortFrom(netip.AddrFrom16(local).Unmap(), lport),
			netip.AddrPortFrom(netip.AddrFrom16(remote).Unmap(), rport)
	}
	return 4, netip.AddrPortFrom(netip.AddrFrom4([4]byte(local[:4])), lport),
		netip.AddrPortFrom(netip.AddrFrom4([4]byte(remote[:4])), rport)
}

// ms keeps sub-millisecond precision: 0.25 ms matters on loopback.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

// optMs adds a duration in milliseconds only where it was measured: an
// unmeasured one (HZ unknown, a start tcptrace did not see) is zero, which
// the key would present as a measurement.
func optMs(d map[string]any, key string, v time.Duration, known bool) {
	if known {
		d[key] = ms(v)
	}
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// detailsCap is the most keys any event's details hold.
const detailsCap = 48

// dur prints a duration the way people read them in an incident: 40 ms,
// 5.2 s, 800 µs.
func dur(d time.Duration) string {
	neg := ""
	if d < 0 {
		neg, d = "-", -d
	}
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%s%.0f s", neg, d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%s%.1f s", neg, d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%s%d ms", neg, d.Milliseconds())
	}
	return fmt.Sprintf("%s%d µs", neg, d.Microseconds())
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
