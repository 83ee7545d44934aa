package tracer

import (
	"fmt"
	"strings"
	"time"
)

// rtoStall is an rto_stall line's episode: the retransmission timer fired
// (once or more, each firing doubling the next) and nothing has
// acknowledged the data since, while the peer's segments arrive.
type rtoStall struct {
	// Stall: since the episode's first timeout; known only when tcptrace
	// saw that timeout (StallKnown).
	Stall      time.Duration
	StallKnown bool
	SinceLast  time.Duration // since the latest timeout's retransmission
	// Heard: since the first segment from the peer that found the data
	// waiting (the path is back, or the peer never left).
	Heard time.Duration
	// Next: until the retransmission timer fires again (NextKnown: HZ is
	// known and the timer pending is the retransmission timer).
	Next      time.Duration
	NextKnown bool
	// GiveUpIn: until the kernel aborts the connection, counted from the
	// first timeout (the kernel counts from the episode's first
	// retransmission); 0 when unknown.
	GiveUpIn time.Duration
}

func rtoStallReason(kind uint8) Reason {
	if kind == uint8(tcptraceRtoStallKindRTO_STALL_RECOVERED) {
		return reasonRecovered
	}
	return reasonRTOBackoff
}

func decodeRTOStall(d *decoder, r *tcptraceEvent, t tally) Event {
	e, dt := decodeRtx(d, r, t)
	e.Reason = rtoStallReason(r.X.Kind)
	s := &e.snap
	st := rtoStall{
		Stall:      time.Duration(r.X.SinceFirstRtoNs),
		StallKnown: r.X.EpisodeKnown != 0,
		SinceLast:  time.Duration(r.X.SinceLastRtoNs),
		Heard:      time.Duration(r.X.SinceHeardNs),
	}
	if s.HZKnown && s.Timer == timerName(timerRetrans) {
		st.Next, st.NextKnown = max(s.TimerFiresIn, 0), true
	}
	if st.StallKnown && e.retransmit.GiveUp > st.Stall {
		st.GiveUpIn = e.retransmit.GiveUp - st.Stall
	}
	e.retransmit.stall = st
	// The line's count is the peer's segments that found the data waiting
	// (recovered: the one that acknowledged it).
	dt["peer_segments"] = t.count
	dt["unsent_bytes"] = s.NotsentBytes
	dt["since_last_rto_ms"] = ms(st.SinceLast)
	dt["peer_heard_ms"] = ms(st.Heard)
	optMs(dt, "stall_ms", st.Stall, st.StallKnown)
	if e.Reason == reasonRTOBackoff {
		optMs(dt, "next_retransmit_ms", st.Next, st.NextKnown)
		optMs(dt, "give_up_in_ms", st.GiveUpIn, st.GiveUpIn > 0)
	}
	e.Details = dt
	return e
}

func explainRTOStall(reason Reason, x *retransmitState, s *snapshot, count uint64) string {
	st := &x.stall
	var b strings.Builder
	timeouts := "once"
	if s.RTORetransmits != 1 {
		timeouts = fmt.Sprintf("%d times in a row", s.RTORetransmits)
	}
	if reason == reasonRecovered {
		b.WriteString("Data acknowledged again, ending an RTO stall")
		if st.StallKnown {
			fmt.Fprintf(&b, " of %s", dur(st.Stall))
		}
		fmt.Fprintf(&b, " (the retransmission timer fired %s, backoff %d)", timeouts, s.Backoff)
		fmt.Fprintf(&b, "; the peer had been heard for the last %s of it while the data waited for the backed-off timer", dur(st.Heard))
		b.WriteString("; ")
		writeRTORemedies(&b, x, s)
		b.WriteString(".")
		return b.String()
	}
	segs := "a segment"
	if count != 1 {
		segs = fmt.Sprintf("%d segments", count)
	}
	fmt.Fprintf(&b, "The peer is heard (%s) but %d bytes sent here wait for the retransmission timer", segs, s.UnackedBytes)
	switch {
	case st.NextKnown && st.Next > 0:
		fmt.Fprintf(&b, ", which fires next in %s", dur(st.Next))
	case st.NextKnown:
		b.WriteString(", which is due now")
	}
	fmt.Fprintf(&b, ": it fired %s without an acknowledgement", timeouts)
	if st.StallKnown {
		fmt.Fprintf(&b, " over %s", dur(st.Stall))
	}
	if s.HZKnown {
		fmt.Fprintf(&b, " and backed off to an RTO of %s", dur(s.RTO))
	}
	fmt.Fprintf(&b, "; the latest retransmission went out %s ago (srtt %s) and was not answered, and the peer's segments acknowledge none of the data, so they do not restart its transmission", dur(st.SinceLast), dur(s.SRTT))
	if s.NotsentBytes > 0 {
		fmt.Fprintf(&b, "; %d bytes more are queued behind it", s.NotsentBytes)
	}
	if st.GiveUpIn > 0 {
		if x.UserTimeout > 0 {
			fmt.Fprintf(&b, "; the connection is aborted in about %s (TCP_USER_TIMEOUT %s)", dur(st.GiveUpIn), dur(x.UserTimeout))
		} else {
			fmt.Fprintf(&b, "; the connection is aborted in about %s (net.ipv4.tcp_retries2 %d)", dur(st.GiveUpIn), x.Retries2)
		}
	}
	b.WriteString("; ")
	writeRTORemedies(&b, x, s)
	b.WriteString("; TCP_NODELAY is not the cause: Nagle holds only data not yet sent, these bytes were sent and wait to be sent again")
	b.WriteString(".")
	return b.String()
}

// writeRTORemedies names what bounds an RTO stall, as far as this kernel
// has it.
func writeRTORemedies(b *strings.Builder, x *retransmitState, s *snapshot) {
	k := rtoMaxKnobs(s)
	switch {
	case k != "" && x.RTOMax > 0:
		fmt.Fprintf(b, "to resume sooner once the path is back, cap the backoff below its %s ceiling (%s", dur(x.RTOMax), k)
	case k != "":
		fmt.Fprintf(b, "to resume sooner once the path is back, cap the backoff (%s", k)
	case x.RTOMax > 0:
		fmt.Fprintf(b, "the backoff's ceiling is fixed at %s on this kernel", dur(x.RTOMax))
	}
	if k != "" {
		if s.RTOMaxSysctl {
			fmt.Fprintf(b, ", %s in this namespace", dur(x.RTOMaxSysctl))
		}
		b.WriteString(")")
	}
	if k != "" || x.RTOMax > 0 {
		b.WriteString("; ")
	}
	if x.UserTimeout > 0 {
		fmt.Fprintf(b, "to fail over sooner lower TCP_USER_TIMEOUT (%s)", dur(x.UserTimeout))
	} else {
		fmt.Fprintf(b, "to fail over sooner set TCP_USER_TIMEOUT or lower net.ipv4.tcp_retries2 (%d)", x.Retries2)
	}
	b.WriteString("; an application heartbeat with a deadline notices the stall without waiting for either")
}
