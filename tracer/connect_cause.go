package tracer

import (
	"fmt"
	"net/netip"
	"time"
)

// synFates remembers, for a few minutes, what a listener or a TIME_WAIT
// socket on this host did to a client's SYN: tcptrace sees both ends when
// the destination is local, and the client's syn_retransmit line can then
// name the cause instead of blaming the path. A SYN is found by its 4-tuple
// as the refusing socket saw it and, for a SYN refused by a TIME_WAIT
// socket, by its sequence number too: NAT between the client and that
// socket (namespaces, containers) rewrites the client's address and port,
// never the SYN's sequence number, which is the client's ISN.
type synFates struct {
	byTuple map[fateTuple]synFate
	bySeq   map[uint32]synFate
	added   int
}

// fateTuple: the client and the address it connected to. Loopback
// addresses exist once per namespace, so they are keyed with it.
type fateTuple struct {
	netns          uint32
	client, server netip.AddrPort
}

func newFateTuple(netns uint32, client, server netip.AddrPort) fateTuple {
	if !server.Addr().IsLoopback() {
		netns = 0
	}
	return fateTuple{netns: netns, client: client, server: server}
}

// synFate is one refusal, with the numbers its own line printed.
type synFate struct {
	at       time.Time
	typ      EventType // SynDrop or PawsReject
	reason   Reason
	refuser  netip.AddrPort // the listener, or the TIME_WAIT socket's local end
	client   netip.AddrPort // the client as the refusing socket saw it
	listener listenState    // syn_drop
	conn     connState      // paws_reject
}

// fateTTL: a SYN retransmit comes at most TCP_RTO_MAX (120 s) after the
// SYN before it.
const fateTTL = 130 * time.Second

func newSynFates() *synFates {
	return &synFates{byTuple: map[fateTuple]synFate{}, bySeq: map[uint32]synFate{}}
}

// note records a refusal from a decoded syn_drop or paws_reject line. An
// aggregated line names its latest client only: the others are not known.
func (f *synFates) note(e *Event) {
	if f == nil {
		return
	}
	switch {
	case e.Type == SynDrop:
		fate := synFate{at: e.Time, typ: SynDrop, reason: e.Reason, refuser: e.Local, client: e.Remote, listener: e.listen}
		f.byTuple[newFateTuple(e.NetNS, e.Remote, e.Local)] = fate
	case e.Type == PawsReject && e.conn.SYN:
		fate := synFate{at: e.Time, typ: PawsReject, reason: e.Reason, refuser: e.Local, client: e.Remote, conn: e.conn}
		f.byTuple[newFateTuple(e.NetNS, e.Remote, e.Local)] = fate
		f.bySeq[e.conn.Seq] = fate
	default:
		return
	}
	if f.added++; f.added%1024 == 0 {
		f.prune(e.Time)
	}
}

func (f *synFates) prune(now time.Time) {
	for k, v := range f.byTuple {
		if now.Sub(v.at) > fateTTL {
			delete(f.byTuple, k)
		}
	}
	for k, v := range f.bySeq {
		if now.Sub(v.at) > fateTTL {
			delete(f.bySeq, k)
		}
	}
}

// find is the latest refusal of a SYN of this connect(): by 4-tuple, else
// (PAWS behind NAT) by the ISN, and only one that came after the connect()
// began: a 4-tuple or an ISN of an earlier connection is not this one.
func (f *synFates) find(e *Event) (synFate, bool) {
	if f == nil {
		return synFate{}, false
	}
	since := e.Time.Add(-fateTTL)
	if e.conn.StartKnown {
		since = e.Time.Add(-e.conn.Elapsed)
	}
	ok := func(v synFate) bool { return !v.at.Before(since) && !v.at.After(e.Time.Add(time.Second)) }
	if v, found := f.byTuple[newFateTuple(e.NetNS, e.Local, e.Remote)]; found && ok(v) {
		return v, true
	}
	if v, found := f.bySeq[e.conn.Seq]; found && ok(v) && v.refuser.Port() != 0 {
		return v, true
	}
	return synFate{}, false
}

// natted: the refusing socket saw the client under another address or
// port: NAT rewrote it on the way.
func (v *synFate) natted(client netip.AddrPort) bool { return v.client != client }

// details adds the refusal's numbers to a syn_retransmit line's details.
func (v *synFate) details(d map[string]any, e *Event) {
	d["refused_by_event"] = v.typ.String()
	d["refused_by_reason"] = string(v.reason)
	d["refused_by_socket"] = v.refuser.String()
	d["refused_ms_before"] = ms(e.Time.Sub(v.at))
	if v.natted(e.Local) {
		d["refused_client_after_nat"] = v.client.String()
	}
	switch v.typ {
	case SynDrop:
		if v.listener.Found {
			d["listener_accept_queue"] = v.listener.AcceptQueue
			d["listener_accept_queue_max"] = v.listener.AcceptQueueMax
			d["listener_syn_queue"] = v.listener.SynQueue
		}
	case PawsReject:
		if v.conn.TSSeen && v.conn.TSRecentKnown {
			d["refused_tsval_behind_by"] = int32(v.conn.TSRecent - v.conn.TSval)
		}
		if v.conn.RFC1337Known {
			d["tcp_rfc1337"] = v.conn.RFC1337
		}
	}
}

// sentence says who refused the SYN on this host, with the numbers of the
// refusing socket's own line, and what follows for the client.
func (v *synFate) sentence(e *Event) string {
	ago := dur(e.Time.Sub(v.at))
	switch v.typ {
	case SynDrop:
		s := fmt.Sprintf("the listener on %s on this host dropped this connection's SYN %s before this retransmit: syn_drop %s", v.refuser, ago, v.reason)
		if v.listener.Found {
			s += fmt.Sprintf(", accept queue %d of %d, SYN queue %d", v.listener.AcceptQueue, v.listener.AcceptQueueMax, v.listener.SynQueue)
		}
		return s + "; not the network: the server does not accept() fast enough (see its syn_drop lines)"
	case PawsReject:
		s := fmt.Sprintf("a TIME_WAIT socket on this host (%s, from %s", v.refuser, v.client)
		if v.natted(e.Local) {
			s += fmt.Sprintf(", the client as NAT rewrote it; matched by the SYN's sequence number %d", e.conn.Seq)
		}
		s += fmt.Sprintf(") rejected this connection's SYN %s before this retransmit: paws_reject %s", ago, v.reason)
		if v.conn.TSSeen && v.conn.TSRecentKnown {
			s += fmt.Sprintf(", its timestamp %d behind the %d that socket holds", int32(v.conn.TSRecent-v.conn.TSval), v.conn.TSRecent)
		}
		if v.conn.RFC1337Known {
			s += "; " + rfc1337Clause(v.conn.RFC1337, "there")
		}
		return s
	}
	return ""
}

// rfc1337Clause says what decides how long a client refused by PAWS in
// TIME_WAIT suffers. The TIME_WAIT socket answers the SYN with a duplicate
// ACK, which the client in SYN_SENT answers with a reset (and a quick SYN
// retransmit). tcp_timewait_state_process(): with tcp_rfc1337=0 that reset
// kills the TIME_WAIT socket and the next SYN opens the connection; with 1
// the reset is ignored, and each rejected SYN re-arms the 60 s TIME_WAIT
// timer, so the client is refused until it gives up or pauses 60 s.
func rfc1337Clause(v uint8, where string) string {
	if v == 0 {
		return "net.ipv4.tcp_rfc1337=0 " + where + ": the client's reset to the TIME_WAIT socket's duplicate ACK ends the TIME_WAIT, and its next SYN gets through at once"
	}
	return fmt.Sprintf("net.ipv4.tcp_rfc1337=%d %s: the client's reset is ignored and each rejected SYN re-arms the 60 s TIME_WAIT, so every retry is refused until connect() gives up", v, where)
}
