package tracer

import (
	"fmt"
	"net/netip"
	"strings"
)

// explainConn writes the one sentence of a connection event. Every number
// in it is one of the event's details. cause, for syn_retransmit: what a
// socket on this host did to the connection's SYN (connect_cause.go), said
// instead of suspecting the path.
func explainConn(t EventType, c *ConnState, remote netip.AddrPort, count uint64, cause string) string {
	var b strings.Builder
	switch t {
	case SynRetransmit:
		if c.AttemptLo != 0 && count > 1 {
			c.explainCrowdedSynRetransmit(&b, remote, count, cause)
			break
		}
		fmt.Fprintf(&b, "SYN to %s retransmitted", remote)
		if c.SynRetransmits > 0 {
			fmt.Fprintf(&b, " (retransmit %d", c.SynRetransmits)
			if c.StartKnown {
				fmt.Fprintf(&b, ", %s after connect()", dur(c.Elapsed))
			}
			b.WriteString(")")
		}
		if c.TransmitErr != 0 {
			fmt.Fprintf(&b, " but it never left this host: the IP layer refused it with %s", transmitErrName(c.TransmitErr))
		} else {
			b.WriteString(": no SYN-ACK came back")
		}
		if c.Counted > 1 {
			fmt.Fprintf(&b, "; %d retransmits since the last line, %d of them refused on this host unseen", c.Counted, c.Counted-1)
		}
		if c.SynKnown {
			b.WriteString("; " + c.giveUpClause())
		}
		c.synCauseClause(&b, cause)
	case ConnectTimeout:
		fmt.Fprintf(&b, "connect() to %s failed with ETIMEDOUT", remote)
		if c.StartKnown {
			fmt.Fprintf(&b, " after %s", dur(c.Elapsed))
		}
		fmt.Fprintf(&b, " and %s, none answered", plural(int(c.SynRetransmits), "SYN retransmit"))
		if c.SynKnown {
			fmt.Fprintf(&b, "; the limit: %s", c.limitClause())
		}
		b.WriteString("; to fail faster set TCP_SYNCNT or TCP_USER_TIMEOUT on the socket (or lower net.ipv4.tcp_syn_retries), or use a connect timeout in the application; then find why no SYN-ACK came back: the destination, the path, or this host's own output rules (syn_retransmit lines say if the SYNs left)")
	case ConnectRefused:
		fmt.Fprintf(&b, "connect() to %s failed with ECONNREFUSED", remote)
		if c.StartKnown {
			fmt.Fprintf(&b, " after %s", dur(c.Elapsed))
		}
		if c.SynRetransmits > 0 {
			fmt.Fprintf(&b, " and %s", plural(int(c.SynRetransmits), "SYN retransmit"))
		}
		fmt.Fprintf(&b, ": the host answered the SYN with a reset: nothing listens on port %d there (service down or wrong port), or a firewall rejects with a TCP reset", remote.Port())
	case PortExhaustion:
		fmt.Fprintf(&b, "connect() to %s failed with EADDRNOTAVAIL", remote)
		if count > 1 {
			fmt.Fprintf(&b, " (%d times)", count)
		}
		b.WriteString(": no free local port")
		if c.PortsKnown {
			fmt.Fprintf(&b, " in net.ipv4.ip_local_port_range %d-%d (%d ports)", c.PortLo, c.PortHi, c.PortCount())
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
	case TimewaitOverflow:
		fmt.Fprintf(&b, "connection to %s closed without TIME_WAIT", remote)
		if count > 1 {
			fmt.Fprintf(&b, " (and %d more)", count-1)
		}
		if c.TwKnown {
			fmt.Fprintf(&b, ": the namespace holds %d TIME_WAIT sockets, net.ipv4.tcp_max_tw_buckets=%d", c.TwCount, c.MaxTw)
		} else {
			b.WriteString(": the TIME_WAIT bucket limit net.ipv4.tcp_max_tw_buckets is reached")
		}
		b.WriteString("; a late segment of the old connection can now be taken for data of a new one with the same ports; raise tcp_max_tw_buckets, and reduce TIME_WAIT at its source: reuse connections, or have the peer close first")
	case PawsReject:
		what := "segment"
		if c.SYN {
			what = "SYN"
		}
		fmt.Fprintf(&b, "%s from %s dropped by the PAWS timestamp check", what, remote)
		if c.DropReason != "" {
			fmt.Fprintf(&b, " (%s)", c.DropReason)
		}
		if count > 1 {
			fmt.Fprintf(&b, ", %d times", count)
		}
		if c.TSSeen && c.TSRecentKnown {
			fmt.Fprintf(&b, ": its timestamp %d is %d behind the %d this host last saw from that address and port", c.TSval, int32(c.TSRecent-c.TSval), c.TSRecent)
		}
		reason := c.DropReason
		if c.PawsRecomputed {
			reason = "TCP_RFC7323_TW_PAWS"
		}
		switch reason {
		case "TCP_RFC7323_TW_PAWS":
			b.WriteString("; the 4-tuple is still in TIME_WAIT here and the new SYN's clock is older: typical of several clients behind one NAT address, whose timestamp clocks differ, reusing a source port")
			if c.SYN && c.RFC1337Known {
				b.WriteString("; how long the client suffers: " + rfc1337Clause(c.RFC1337, "here"))
			} else {
				b.WriteString("; the client sees its connect() time out or stall")
			}
			b.WriteString("; fix it on the NAT (keep per-client source ports apart) or let clients close first so TIME_WAIT stays on their side; tcp_tw_recycle, which made this far worse, was removed in 4.12")
		case "TCP_RFC7323_TSECR":
			b.WriteString("; the final ACK echoed a timestamp this host never sent: a middlebox rewriting timestamps, or a spoofed or stale handshake")
		case "TCP_RFC7323_PAWS_ACK":
			b.WriteString("; an old duplicate ACK, harmless in small numbers; many point to a peer or middlebox resending stale segments")
		default:
			b.WriteString("; the peer's timestamp clock went backwards on a live connection: a NAT mixing several clients into one 4-tuple, a middlebox rewriting timestamps, or a peer that restarted; the segment is discarded and the peer retransmits in vain")
		}
	case Reset:
		// The line stands for every reset to or from the peer's address in
		// the interval; the ports, state and bytes are the latest one's.
		peer, latest := remote.String(), ""
		if count > 1 {
			peer, latest = fmt.Sprintf("%s and %d more", remote, count-1), "the latest "
		}
		if c.Side == "sent" {
			if count > 1 {
				latest += "in "
			}
			fmt.Fprintf(&b, "reset sent to %s (%sstate %s)", peer, latest, c.State)
			if c.RstReason != "" {
				fmt.Fprintf(&b, ", reason %s", c.RstReason)
			}
			switch {
			case c.Unread > 0:
				fmt.Fprintf(&b, ": the application closed the socket with %d bytes unread, which aborts the connection (read everything before close())", c.Unread)
			case c.State == "CLOSE":
				b.WriteString(": the application aborted the connection (SO_LINGER with a zero timeout, or shutdown of a socket with pending data); the peer gets ECONNRESET")
			default:
				b.WriteString(": this host aborted the connection (a segment it could not accept, or a timeout); the peer gets ECONNRESET")
			}
		} else {
			fmt.Fprintf(&b, "reset received from %s", peer)
			if count > 1 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, " %sin state %s", latest, c.State)
			fmt.Fprintf(&b, " with %d bytes unacknowledged and %d unread", c.Unacked, c.Unread)
			b.WriteString(": the peer aborted the connection (its process exited or was killed with the socket open, closed with unread data, or used SO_LINGER 0), or a middlebox reset it; the application gets ECONNRESET (EPIPE on a later write) and data in flight is lost")
		}
	}
	b.WriteString(".")
	return b.String()
}

// explainCrowdedSynRetransmit: the line of a destination that many
// connections retransmit to at once (a frozen server, a dead backend): the
// count, the attempts, the latest connection's numbers.
func (c *ConnState) explainCrowdedSynRetransmit(b *strings.Builder, remote netip.AddrPort, count uint64, cause string) {
	fmt.Fprintf(b, "SYN to %s retransmitted %d times by connections retransmitting to it at once", remote, count)
	if c.AttemptLo == c.AttemptHi {
		fmt.Fprintf(b, " (retransmit %d of each connect()", c.AttemptLo)
	} else {
		fmt.Fprintf(b, " (retransmits %d to %d of their connect()s", c.AttemptLo, c.AttemptHi)
	}
	if c.StartKnown {
		fmt.Fprintf(b, "; the latest %s after its connect()", dur(c.Elapsed))
	}
	b.WriteString("): no SYN-ACK came back")
	if c.TransmitErr != 0 {
		fmt.Fprintf(b, "; the latest never left this host: the IP layer refused it with %s", transmitErrName(c.TransmitErr))
	}
	if c.SynKnown {
		rtx, giveUp := c.synModel().schedule()
		fmt.Fprintf(b, "; connect() gives up %s after the first SYN, after %s (%s)", dur(giveUp), plural(len(rtx), "retransmit"), c.limitClause())
	}
	if cause != "" {
		cause = "for the latest of them, " + cause
	}
	c.synCauseClause(b, cause)
}

// synCauseClause: why no SYN-ACK came back, as far as this host knows.
func (c *ConnState) synCauseClause(b *strings.Builder, cause string) {
	switch {
	case c.TransmitErr != 0:
		b.WriteString("; look at this host's output path: firewall rules (EPERM is a netfilter drop), qdiscs, a full device queue, routes")
	case cause != "":
		b.WriteString("; " + cause)
	default:
		b.WriteString("; the destination drops SYNs (firewall, host down, wrong address) or the path is broken; a refusing host would answer with a reset at once")
	}
}

// giveUpClause says when connect() gives up and why then.
func (c *ConnState) giveUpClause() string {
	rtx, giveUp := c.synModel().schedule()
	s := ""
	if n := int(c.SynRetransmits); n > 0 && n <= len(rtx) {
		s = fmt.Sprintf("this one %s after the previous SYN", dur(rtx[n-1]-prev(rtx, n-1)))
		if n < len(rtx) {
			s += fmt.Sprintf(", the next in %s", dur(rtx[n]-prev(rtx, n)))
		}
		s += "; "
	}
	if int(c.SynRetransmits) > len(rtx) {
		// More than the timer makes: a segment the connecting socket could
		// not use (a TIME_WAIT socket's duplicate ACK) made it retransmit
		// at once, outside the count.
		return s + fmt.Sprintf("connect() gives up %s after the first SYN (%s)", dur(giveUp), c.limitClause())
	}
	return s + fmt.Sprintf("connect() gives up %s after the first SYN, after %s (%s)", dur(giveUp), plural(len(rtx), "retransmit"), c.limitClause())
}

// limitClause names the settings that set the retry limit.
func (c *ConnState) limitClause() string {
	var parts []string
	if c.SynCnt != 0 {
		parts = append(parts, fmt.Sprintf("TCP_SYNCNT=%d (net.ipv4.tcp_syn_retries=%d does not apply)", c.SynCnt, c.SynRetries))
	} else {
		parts = append(parts, fmt.Sprintf("net.ipv4.tcp_syn_retries=%d", c.SynRetries))
	}
	if c.LinearKnown {
		parts = append(parts, fmt.Sprintf("net.ipv4.tcp_syn_linear_timeouts=%d", c.Linear))
	}
	if c.UserTimeout > 0 {
		parts = append(parts, fmt.Sprintf("TCP_USER_TIMEOUT=%s", dur(c.UserTimeout)))
	} else {
		parts = append(parts, "no TCP_USER_TIMEOUT")
	}
	return strings.Join(parts, ", ")
}
