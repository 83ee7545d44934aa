package tracer

import (
	"fmt"
	"net/netip"
	"strings"
)

// explainConnect writes the one sentence of a connect event. Every number
// in it is one of the event's details.
func explainConnect(t EventType, c *connState, remote netip.AddrPort, count uint64) string {
	cause := c.cause
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
	}
	b.WriteString(".")
	return b.String()
}

// explainCrowdedSynRetransmit: the line of a destination that many
// connections retransmit to at once (a frozen server, a dead backend): the
// count, the attempts, the latest connection's numbers.
func (c *connState) explainCrowdedSynRetransmit(b *strings.Builder, remote netip.AddrPort, count uint64, cause string) {
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
func (c *connState) synCauseClause(b *strings.Builder, cause string) {
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
func (c *connState) giveUpClause() string {
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
func (c *connState) limitClause() string {
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
