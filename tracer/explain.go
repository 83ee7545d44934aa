package tracer

import (
	"fmt"
	"strings"
	"time"
)

// explainSend writes the one-sentence explanation of a send_eagain or
// send_blocked line: what filled the buffer, with the numbers that prove it,
// then what to change. Every figure in it is one of the event's details;
// durations that need HZ are left out when HZ is unknown.
func explainSend(t EventType, r Reason, s *Snapshot, n tally) string {
	var b strings.Builder
	blocked := func() {
		switch {
		case t != SendBlocked:
			return
		case n.inProgress:
			fmt.Fprintf(&b, "send() has been blocked for %s waiting for send-buffer space (still waiting)", dur(n.wait))
		case n.count > 1:
			fmt.Fprintf(&b, "send() slept %s in %d waits for send-buffer space (longest %s)", dur(n.wait), n.count, dur(n.maxWait))
		default:
			fmt.Fprintf(&b, "send() slept %s waiting for send-buffer space", dur(n.wait))
		}
		b.WriteString("; ")
	}
	blocked()
	fmt.Fprintf(&b, "send buffer full (%d of %d bytes queued", s.WmemQueued, s.SndbufBytes)
	if s.SndbufLocked {
		b.WriteString(", SO_SNDBUF set by the application")
	}
	b.WriteString(")")

	switch r {
	case ReasonMemoryPressure:
		b.Reset()
		blocked()
		fmt.Fprintf(&b, "TCP is under global memory pressure (%d pages charged to TCP; %d of %d bytes queued on this socket): the kernel shrinks send buffers and refuses new memory host-wide; raise net.ipv4.tcp_mem or find the sockets holding memory (ss -tm)", s.MemAllocated, s.WmemQueued, s.SndbufBytes)
	case ReasonNotsentLowat:
		b.Reset()
		blocked()
		fmt.Fprintf(&b, "%d bytes not yet sent reach TCP_NOTSENT_LOWAT (%d bytes), so the socket counts as full until they drain below it; raise or remove TCP_NOTSENT_LOWAT if that is not intended", s.NotsentBytes, s.NotsentLowat)
	case ReasonPeerZeroWindow:
		if s.PeerWindow == 0 {
			fmt.Fprintf(&b, "; the peer advertises a zero window and %d bytes wait unsent", s.NotsentBytes)
		} else {
			fmt.Fprintf(&b, "; the peer's %d-byte window is full (%d bytes in flight leave %d, less than one %d-byte segment) although it acknowledges (last ACK %s ago), and %d bytes wait unsent",
				s.PeerWindow, s.UnackedBytes, max(s.UsableWindow(), 0), s.MSS, dur(s.SinceLastACK), s.NotsentBytes)
		}
		if s.ProbesOut > 0 {
			fmt.Fprintf(&b, ", %s unanswered", plural(int(s.ProbesOut), "zero-window probe"))
		}
		b.WriteString(": the peer application is not reading its socket; fix the reader (slow or stuck), not the sender")
	case ReasonUnackedRetransmitting:
		fmt.Fprintf(&b, "; %d bytes unacknowledged", s.UnackedBytes)
		if s.HZKnown {
			fmt.Fprintf(&b, " for %s", dur(s.SinceLastACK))
		}
		if s.RTORetransmits == 1 {
			b.WriteString(", 1 retransmission timeout")
		} else {
			fmt.Fprintf(&b, ", %d consecutive retransmission timeouts", s.RTORetransmits)
		}
		if s.HZKnown && s.TimerPending && s.Timer == "retransmit" {
			fmt.Fprintf(&b, ", next in %s", dur(s.TimerIn))
		}
		b.WriteString(": the peer is not acknowledging (path down or peer gone); check the path and the peer, and set TCP_USER_TIMEOUT to fail sooner than net.ipv4.tcp_retries2 allows")
	case ReasonCwndLimited:
		fmt.Fprintf(&b, "; %d packets in flight fill the congestion window (%d packets of %d bytes", s.InFlight, s.Cwnd, s.MSS)
		if s.SRTT > 0 {
			fmt.Fprintf(&b, ", srtt %s", dur(s.SRTT))
		}
		fmt.Fprintf(&b, ") and %d bytes wait unsent: the network path is the bottleneck", s.NotsentBytes)
		if s.TotalRetrans > 0 {
			fmt.Fprintf(&b, " (%d segments retransmitted so far: look for loss)", s.TotalRetrans)
		}
		b.WriteString("; a larger send buffer will not help")
	case ReasonSndbufLimited:
		fmt.Fprintf(&b, "; the congestion window (%d of %d packets in flight) and the peer's window (%d bytes) have room: the %d-byte SO_SNDBUF is the limit; remove setsockopt(SO_SNDBUF) so the kernel autotunes it (net.ipv4.tcp_wmem), or raise it to the bandwidth-delay product", s.InFlight, s.Cwnd, s.PeerWindow, s.SndbufBytes)
	default:
		if s.localTransmitStuck() {
			fmt.Fprintf(&b, "; %d bytes wait unsent with nothing in flight although the peer's window (%d bytes) and the congestion window (%d packets) are open: transmits are failing on this host (a netfilter or qdisc drop, or no route); check nft/iptables rules, tc and the route to the peer", s.NotsentBytes, s.PeerWindow, s.Cwnd)
			break
		}
		if s.windowFull() && s.HZKnown {
			fmt.Fprintf(&b, "; %d bytes in flight fill the peer's %d-byte window and no ACK came for %s (the retransmission timer, %s, has not fired yet), %d bytes wait unsent: data may not be getting through; watch for retransmissions", s.UnackedBytes, s.PeerWindow, dur(s.SinceLastACK), dur(s.RTO), s.NotsentBytes)
			break
		}
		fmt.Fprintf(&b, "; %d bytes unacknowledged, %d unsent, peer window %d bytes, %d of %d packets in flight: no single limit stands out", s.UnackedBytes, s.NotsentBytes, s.PeerWindow, s.InFlight, s.Cwnd)
	}
	if s.NoDelay {
		b.WriteString("; TCP_NODELAY is set")
	}
	if s.Cork {
		b.WriteString("; TCP_CORK is set")
	}
	b.WriteString(".")
	return b.String()
}

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
