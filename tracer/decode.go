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
}

func newDecoder(hz uint64) *decoder {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return &decoder{hz: hz, bootWall: time.Now().Add(-time.Duration(ts.Nano())), fates: newSynFates()}
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

// decode builds the public Event.
func (d *decoder) decode(r *tcptraceEvent, t tally) Event {
	if EventType(r.Type).isListenerEvent() {
		e := d.decodeListener(r, t)
		d.fates.note(&e)
		return e
	}
	if EventType(r.Type).isConnEvent() {
		return d.decodeConn(r, t)
	}
	if EventType(r.Type).isAckEvent() {
		return d.decodeACK(r, t)
	}
	e := d.connEvent(r, t)
	s := e.Snapshot
	e.Reason = classifySend(&s)
	e.Explanation = explainSend(e.Type, e.Reason, &s, t)
	e.Details = sendDetails(&s, r, e.Path)
	if e.Type == SendBlocked {
		e.Details["wait_ms"] = ms(t.wait)
		e.Details["max_wait_ms"] = ms(t.maxWait)
		e.Details["in_progress"] = t.inProgress
	}
	return e
}

// connEvent is what every event about one connection carries: the task,
// the addresses and the socket's snapshot.
func (d *decoder) connEvent(r *tcptraceEvent, t tally) Event {
	e := Event{
		Time:     d.wall(r.TsNs),
		Type:     EventType(r.Type),
		PID:      r.Pid,
		TID:      r.Tid,
		Comm:     cString(r.Comm[:]),
		NetNS:    r.S.Netns,
		Count:    t.count,
		Path:     ProbePath(r.Path),
		Socket:   r.S.Sk,
		Snapshot: newSnapshot(&r.S, d.hz),
	}
	e.Family, e.Local, e.Remote = addrs(&r.S)
	return e
}

func (d *decoder) decodeListener(r *tcptraceEvent, t tally) Event {
	l := newListenerState(&r.L)
	e := Event{
		Time:     d.wall(r.TsNs),
		Type:     EventType(r.Type),
		Reason:   listenReasons[r.L.Reason],
		NetNS:    r.L.Netns,
		Count:    t.count,
		Path:     ProbePath(r.Path),
		Socket:   r.L.Sk,
		Listener: l,
	}
	if l.OwnerKnown {
		e.PID, e.Comm = r.Pid, cString(r.Comm[:])
	} else if d.owners != nil {
		e.PID, e.Comm = d.owners.lookup(r.L.Ino)
	}
	e.Family, e.Local, e.Remote = listenAddrs(&r.L)
	e.Explanation = explainListener(e.Type, e.Reason, &l, e.Remote, t.count)
	e.Details = listenerDetails(&l, r)
	return e
}

func addrs(s *tcptraceTcpSnapshot) (family int, local, remote netip.AddrPort) {
	if s.Family == unix.AF_INET6 {
		l := netip.AddrFrom16(s.Saddr).Unmap()
		r := netip.AddrFrom16(s.Daddr).Unmap()
		return 6, netip.AddrPortFrom(l, s.Sport), netip.AddrPortFrom(r, s.Dport)
	}
	l := netip.AddrFrom4([4]byte(s.Saddr[:4]))
	r := netip.AddrFrom4([4]byte(s.Daddr[:4]))
	return 4, netip.AddrPortFrom(l, s.Sport), netip.AddrPortFrom(r, s.Dport)
}

// sendDetails lists every number read, with its unit in the key.
func sendDetails(s *Snapshot, r *tcptraceEvent, path ProbePath) map[string]any {
	// Sized for every key a line can carry: a map that grows while it is
	// filled costs more than the rest of the line.
	d := make(map[string]any, detailsCap)
	d["probe"] = path.String()
	d["ret"] = r.Ret
	d["state"] = s.State
	d["sndbuf_bytes"] = s.SndbufBytes
	d["sndbuf_set_by_app"] = s.SndbufLocked
	d["wmem_queued_bytes"] = s.WmemQueued
	d["unacked_bytes"] = s.UnackedBytes
	d["notsent_bytes"] = s.NotsentBytes
	d["peer_window_bytes"] = s.PeerWindow
	d["cwnd_packets"] = s.Cwnd
	d["mss_bytes"] = s.MSS
	d["packets_out"] = s.PacketsOut
	d["packets_in_flight"] = s.InFlight
	d["retrans_out_packets"] = s.RetransOut
	d["lost_packets"] = s.LostOut
	d["sacked_packets"] = s.SackedOut
	d["total_retrans_packets"] = s.TotalRetrans
	d["rto_retransmits"] = s.RTORetransmits
	d["backoff"] = s.Backoff
	d["zero_window_probes"] = s.ProbesOut
	d["timer"] = s.Timer
	d["srtt_us"] = s.SRTT.Microseconds()
	d["nodelay"] = s.NoDelay
	d["cork"] = s.Cork
	d["notsent_lowat_bytes"] = s.NotsentLowat
	d["tcp_memory_pressure"] = s.MemPressure
	d["tcp_memory_pages"] = s.MemAllocated
	d["socket_inode"] = r.S.Ino
	if s.HZKnown {
		d["rto_ms"] = ms(s.RTO)
		d["since_last_ack_ms"] = ms(s.SinceLastACK)
		if s.TimerPending {
			d["timer_in_ms"] = ms(s.TimerIn)
		}
	}
	return d
}

// ms keeps sub-millisecond precision: 0.25 ms matters on loopback.
func ms(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// detailsCap is the most keys any event's details hold.
const detailsCap = 48
