/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector reset: reset.
 *
 * tcp:tcp_send_reset and tcp:tcp_receive_reset on a connection past its
 * handshake. From 6.10 tcp_send_reset also fires without a socket (a segment
 * nobody owns) and passes the reset's reason (enum sk_rst_reason).
 */
#include "common.bpf.h"
#include "owners.bpf.h"
#include "conn.bpf.h"

#define RST_SENT 1
#define RST_RECEIVED 2

/* States of a connection past its handshake, where a reset means one side
 * aborted it. Sent resets add CLOSE: close() with unread data, SO_LINGER 0
 * and tcp_disconnect() set CLOSE before they send the reset. */
#define RST_STATES (TCPF(TCP_ESTABLISHED) | TCPF(TCP_FIN_WAIT1) | TCPF(TCP_FIN_WAIT2) | \
		    TCPF(TCP_CLOSE_WAIT) | TCPF(TCP_CLOSING) | TCPF(TCP_LAST_ACK))

/* One line per peer address, side, owner and interval: a storm of aborted
 * connections (a crashing peer, SO_LINGER 0 clients) must not flood the
 * output; the line names the latest connection and the count. The owner is
 * in the key because one address's connections may belong to several
 * processes (the members of a SO_REUSEPORT group, one client per worker):
 * each is counted on its own line, and --pid keeps its own count. */
static __always_inline void on_reset(struct sock *sk, __u8 side, __u32 rst_reason, bool reason_known)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct agg_key key = { .type = EVENT_RESET };
	SCRATCH_EVENT(t);
	__u32 states = RST_STATES;
	/* Zeroed: clang may load o.tgid before testing whether the owner is
	 * known, and verifiers before 5.13 reject any read of stack never
	 * written, even one whose value is then discarded. */
	struct owner o = {};
	bool in_close, known;
	__u8 state;

	if (!sk)
		return;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (side == RST_SENT)
		states |= TCPF(TCP_CLOSE);
	if (!(TCPF(state) & states) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return;
	/* A reset sent from CLOSE is an abort in a system call on the socket
	 * (close() with unread data or SO_LINGER 0, connect(AF_UNSPEC): they
	 * set CLOSE, then send); timers and softirq send from the state the
	 * connection is in. */
	in_close = side == RST_SENT && state == TCP_CLOSE;
	if (!conn_sock_wanted(sk))
		return;
	known = sock_owner(sk, in_close, &o);
	if (who_filtered() && !known) {
		counter_inc(&owner_unknown, OWNER_UNKNOWN_FILTERED);
		return;
	}
	if (known && !who_wanted(o.tgid, o.cgroup))
		return;
	key.sk = (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) << 32 | side;
	key.sub = known ? o.tgid : 0;
	key_peer(&key, sk);
	t = agg_first(&key, EVENT_RESET, PATH_TRACEPOINT);
	if (!t)
		return;
	read_conn(sk, &t->ev.c);
	t->ev.c.side = side;
	t->ev.c.rst_reason = rst_reason;
	t->ev.c.rst_reason_known = reason_known;
	t->ev.c.unacked = BPF_CORE_READ(tp, snd_nxt) - BPF_CORE_READ(tp, snd_una);
	t->ev.c.unread = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	t->ev.c.owner_known = known;
	if (known) {
		t->ev.pid = o.tgid;
		t->ev.cgroup = o.cgroup;
		__builtin_memcpy(t->ev.comm, o.comm, sizeof(t->ev.comm));
	} else
		counter_inc(&owner_unknown, OWNER_UNKNOWN_REPORTED);
	agg_commit(&key, t, 0);
}

/* Up to 6.9: only full sockets; the reason did not exist. */
TP_PROG(tcp_send_reset, tp_tcp_send_reset, on_reset(sk, RST_SENT, 0, false), struct sock *sk, struct sk_buff *skb)
/* 6.10+: every reset, sk NULL when no socket owns the segment. */
TP_PROG(tcp_send_reset, tp_tcp_send_reset_reason, on_reset(sk, RST_SENT, reason, true), struct sock *sk,
	struct sk_buff *skb, int reason)
TP_PROG(tcp_receive_reset, tp_tcp_receive_reset, on_reset(sk, RST_RECEIVED, 0, false), struct sock *sk)
