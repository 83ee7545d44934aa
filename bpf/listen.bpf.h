/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The listener detector's readings (listen.bpf.c has its hooks): this CPU's
 * SNMP counters of a namespace and the baseline a SYN is judged against,
 * what the counters or the listener's queues say happened to a SYN, the
 * listener a segment went to, and the event.
 */
#ifndef LISTEN_BPF_H
#define LISTEN_BPF_H

#include "common.bpf.h"
#include "owners.bpf.h"
#include "mib.bpf.h"

/* Indexes of the four counters in struct linux_mib, resolved by name from
 * the running kernel's BTF (the enum is anonymous, so not CO-RE-relocatable). */
const volatile __u32 mib_listen_overflows = 0;
const volatile __u32 mib_listen_drops = 0;
const volatile __u32 mib_reqq_full_drop = 0;
const volatile __u32 mib_reqq_full_cookies = 0;

struct mibs {
	__u64 overflows;
	__u64 drops;
	__u64 reqq_drop;
	__u64 cookies;
	/* The CPU's slot holds counters: an entry made by one CPU leaves the
	 * others' slots zeroed, which are not counters. */
	__u64 valid;
};

/* The counters as the previous SYN on this CPU left them, per namespace.
 * Taken for every CPU of every namespace just after attaching
 * (mib_baseline_init, mib_baseline.bpf.c), so that a SYN is judged by its
 * counters from the first one on. */
DEFINE_MAP(mib_baseline, BPF_MAP_TYPE_PERCPU_HASH, __u64, struct mibs, 1024); /* key: struct net * */

/* Every network namespace that existed when the baselines were taken
 * (mib_known_nets walks the kernel's list of them, after attaching). One
 * not among them was made later, while tcptrace was attached: it started
 * with every counter at zero, and zero is its baseline. The kernel's
 * net_cookie cannot tell this: from 5.12 it is handed out from per-CPU
 * batches (6.17 alone made it one global counter), so a namespace made
 * later on another CPU may hold a smaller cookie. A freed namespace's
 * address reused by a new one reads as known: that namespace is judged by
 * the listener's state, never against a wrong baseline. */
#define MIB_NETS_MAX 8192

DEFINE_MAP(mib_nets, BPF_MAP_TYPE_HASH, __u64, __u8, MIB_NETS_MAX); /* key: struct net * */

/* 1 once mib_known_nets walked the whole list into mib_nets; until then
 * (or when the list did not fit) no namespace is taken for a new one. */
DEFINE_MAP(mib_nets_complete, BPF_MAP_TYPE_ARRAY, __u32, __u32, 1);

/* SYNs whose outcome no counter baseline and no listener state told:
 * reported in the summary, never silently left out. */
DEFINE_COUNTERS(syn_unjudged, 1);

/* This CPU's counters of net. tcp_sk is any TCP socket (for the anchor). */
static __always_inline bool read_mibs(struct net *net, struct sock *tcp_sk, struct mibs *m)
{
	__u64 base;

	if (!this_cpu_mibs(net, tcp_sk, &base))
		return false;
	/* Each pair is adjacent in enum linux_mib (each was added together,
	 * and the enum only grows at its end): one read for two, on every SYN.
	 * The test is of constants, decided when the program is verified. */
	if (mib_listen_drops == mib_listen_overflows + 1 && mib_reqq_full_drop == mib_reqq_full_cookies + 1) {
		mib_read_pair(base, mib_listen_overflows, &m->overflows, &m->drops);
		mib_read_pair(base, mib_reqq_full_cookies, &m->cookies, &m->reqq_drop);
		return true;
	}
	m->overflows = mib_read(base, mib_listen_overflows);
	m->drops = mib_read(base, mib_listen_drops);
	m->reqq_drop = mib_read(base, mib_reqq_full_drop);
	m->cookies = mib_read(base, mib_reqq_full_cookies);
	return true;
}

/* The baseline of this CPU for net: its slot, or for a namespace made after
 * the baselines were taken, zero (into zero). NULL when unknown: a SYN is
 * then judged by the listener's state. */
static __always_inline const struct mibs *mib_before(struct net *net, struct mibs *base, struct mibs *zero)
{
	__u64 key = (__u64)net;
	__u32 k = 0, *complete;

	if (base && base->valid)
		return base;
	complete = bpf_map_lookup_elem(&mib_nets_complete, &k);
	if (complete && *complete && !bpf_map_lookup_elem(&mib_nets, &key)) {
		__builtin_memset(zero, 0, sizeof(*zero));
		return zero;
	}
	return NULL;
}

/* Store now as this CPU's baseline for net. */
static __always_inline void mib_store(struct net *net, struct mibs *base, struct mibs *now)
{
	__u64 key = (__u64)net;

	now->valid = 1;
	if (base)
		__builtin_memcpy(base, now, sizeof(*now));
	else
		bpf_map_update_elem(&mib_baseline, &key, now, BPF_ANY);
}

/* What the counters say happened to one SYN. */
static __always_inline __u32 syn_outcome(const struct mibs *before, const struct mibs *after, __u32 *reason)
{
	if (after->drops != before->drops) {
		if (after->overflows != before->overflows)
			*reason = LISTEN_ACCEPT_QUEUE_FULL;
		else if (after->reqq_drop != before->reqq_drop)
			*reason = LISTEN_SYN_QUEUE_FULL;
		else
			*reason = LISTEN_OTHER; /* refined with the queues below */
		return EVENT_SYN_DROP;
	}
	if (after->cookies != before->cookies) {
		*reason = LISTEN_SYN_QUEUE_FULL;
		return EVENT_SYN_COOKIE;
	}
	return 0;
}

static __always_inline void read_listener(struct sock *l, struct listen_snapshot *ls)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)l;
	struct net *net = BPF_CORE_READ(l, __sk_common.skc_net.net);

	ls->sk = (__u64)l;
	ls->listening = 1;
	ls->ino = BPF_CORE_READ(l, sk_socket, file, f_inode, i_ino);
	ls->accept_queue = BPF_CORE_READ(l, sk_ack_backlog);
	ls->accept_queue_max = BPF_CORE_READ(l, sk_max_ack_backlog);
	ls->syn_queue = BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
	ls->drops = BPF_CORE_READ(l, sk_drops.counter);
	ls->syncookies = BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies);
	ls->abort_on_overflow = BPF_CORE_READ(net, ipv4.sysctl_tcp_abort_on_overflow);
	ls->max_syn_backlog = BPF_CORE_READ(net, ipv4.sysctl_max_syn_backlog);
	ls->somaxconn = BPF_CORE_READ(net, core.sysctl_somaxconn);
}

/* The SYN's (or ACK's) addresses, from its headers: local is the
 * destination, remote the source. */
static __always_inline void read_skb_addrs(struct sk_buff *skb, struct listen_snapshot *ls)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 ver = 0;
	__u16 ports[2];

	bpf_probe_read_kernel(&ver, 1, head + nh);
	if ((ver >> 4) == 6) {
		ls->family = AF_INET6;
		bpf_probe_read_kernel(ls->raddr, 16, head + nh + 8);
		bpf_probe_read_kernel(ls->laddr, 16, head + nh + 24);
	} else {
		ls->family = AF_INET;
		bpf_probe_read_kernel(ls->raddr, 4, head + nh + 12);
		bpf_probe_read_kernel(ls->laddr, 4, head + nh + 16);
	}
	bpf_probe_read_kernel(ports, sizeof(ports), head + th);
	ls->rport = bpf_ntohs(ports[0]);
	ls->lport = bpf_ntohs(ports[1]);
}

/* Fill and send (aggregated per listener, event and reason) one listener
 * event. l may be NULL when the listener is not known. */
static __always_inline void listen_event_nth(__u32 type, __u32 reason, __u8 path, struct sock *l,
					     struct sk_buff *skb, struct request_sock *req, __u32 nth, __u8 cookie_ack)
{
	/* A SYN-ACK retransmit's number is part of the key: requests that
	 * retransmit together (a burst of clients) share a line per round.
	 * So is the kind of final ACK: a line says which it stands for. */
	struct agg_key key = { .sk = (__u64)l, .type = type, .sub = reason | nth << 8 | (__u32)cookie_ack << 24 };
	SCRATCH_EVENT(t);

	if (l && !owner_wanted(l))
		return;
	if (!l && who_filtered())
		return;
	t = agg_first(&key, type, path);
	if (!t)
		return;
	t->ev.l.reason = reason;
	t->ev.l.cookie_ack = cookie_ack;
	if (skb)
		read_skb_addrs(skb, &t->ev.l);
	if (l) {
		read_listener(l, &t->ev.l);
		t->ev.l.netns = sk_netns(l);
		t->ev.l.owner_known = fill_owner(&t->ev, l);
	} else if (skb) {
		t->ev.l.netns = BPF_CORE_READ(skb_net(skb), ns.inum);
	}
	if (req) {
		struct inet_request_sock *ireq = (struct inet_request_sock *)req;

		t->ev.l.retransmits = nth;
		t->ev.l.req_acked = BPF_CORE_READ_BITFIELD_PROBED(ireq, acked);
		t->ev.l.family = BPF_CORE_READ(req, __req_common.skc_family);
		t->ev.l.lport = BPF_CORE_READ(req, __req_common.skc_num);
		t->ev.l.rport = bpf_ntohs(BPF_CORE_READ(req, __req_common.skc_dport));
		if (t->ev.l.family == AF_INET6) {
			BPF_CORE_READ_INTO(&t->ev.l.laddr, req, __req_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
			BPF_CORE_READ_INTO(&t->ev.l.raddr, req, __req_common.skc_v6_daddr.in6_u.u6_addr8);
		} else {
			BPF_CORE_READ_INTO((__u32 *)t->ev.l.laddr, req, __req_common.skc_rcv_saddr);
			BPF_CORE_READ_INTO((__u32 *)t->ev.l.raddr, req, __req_common.skc_daddr);
		}
	}
	agg_commit(&key, t, 0);
}

static __always_inline void listen_event(__u32 type, __u32 reason, __u8 path, struct sock *l,
					 struct sk_buff *skb)
{
	listen_event_nth(type, reason, path, l, skb, NULL, 0, 0);
}

/* The listener the kernel picked for a segment, from its headers. */
static __always_inline struct sock *skb_listener(struct net *net, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 ver = 0, laddr[16] = {};
	__u16 ports[2];

	bpf_probe_read_kernel(&ver, 1, head + nh);
	bpf_probe_read_kernel(ports, sizeof(ports), head + th);
	if ((ver >> 4) == 6) {
		bpf_probe_read_kernel(laddr, 16, head + nh + 24);
		return find_listener_for(BPF_CORE_READ(net, ns.inum), AF_INET6, laddr, bpf_ntohs(ports[1]));
	}
	bpf_probe_read_kernel(laddr, 4, head + nh + 16);
	return find_listener_for(BPF_CORE_READ(net, ns.inum), AF_INET, laddr, bpf_ntohs(ports[1]));
}

/* Does this listener's state show what the counters said happened? */
static __always_inline bool member_matches(struct sock *m, __u32 reason)
{
	__u32 max = BPF_CORE_READ(m, sk_max_ack_backlog);

	switch (reason) {
	case LISTEN_ACCEPT_QUEUE_FULL:
		return BPF_CORE_READ(m, sk_ack_backlog) > max;
	case LISTEN_SYN_QUEUE_FULL:
	case LISTEN_UNPROVEN_PEER:
		/* inet_csk_reqsk_queue_is_full(): >= up to 6.12, > since. */
		return BPF_CORE_READ((struct inet_connection_sock *)m, icsk_accept_queue.qlen.counter) >= (__s32)max;
	}
	return false;
}

/* In a SO_REUSEPORT group, the member whose queues match the outcome: the
 * kernel hashed the segment to one of them, and an accepted SYN or ACK does
 * not leave a full queue behind. Without a group, or when no member
 * matches, the listener found. */
static __always_inline struct sock *pick_member(struct sock *l, __u32 reason)
{
	struct sock *m;

	if (!l || !BPF_CORE_READ(l, sk_reuseport_cb) || member_matches(l, reason))
		return l;
	for (__u32 i = 0; i < REUSEPORT_SCAN; i++) {
		m = reuseport_member(l, i);
		if (!m)
			break;
		if (member_matches(m, reason))
			return m;
	}
	return l;
}

/* The last-quarter rule (tcp_conn_request(), syncookies off): a SYN from a
 * peer without a tcp_metrics RTT is dropped while fewer than a quarter of
 * tcp_max_syn_backlog is left. Refines a drop that moved ListenDrops alone. */
static __always_inline __u32 refine_other(struct sock *l, __u32 reason)
{
	struct net *net;
	__s32 max, qlen;

	if (reason != LISTEN_OTHER || !l)
		return reason;
	net = BPF_CORE_READ(l, __sk_common.skc_net.net);
	if (BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies))
		return reason;
	max = BPF_CORE_READ(net, ipv4.sysctl_max_syn_backlog);
	qlen = BPF_CORE_READ((struct inet_connection_sock *)l, icsk_accept_queue.qlen.counter);
	if (max - qlen < (max >> 2))
		return LISTEN_UNPROVEN_PEER;
	return reason;
}

/*
 * Judged by the listener's state alone: the first SYN on a CPU and
 * namespace, with no counters from before it. tcp_conn_request() decides in
 * this order: a cookie if tcp_syncookies=2 or the SYN queue is full
 * (dropped instead when cookies are off), then a drop if the accept queue is
 * full. The state after the SYN tells most of it: a full accept queue was
 * full before; with tcp_syncookies=2 every SYN gets a cookie; a SYN queue
 * more than one over its limit was full before the SYN (inet_csk_reqsk_
 * queue_is_full() is qlen >= limit up to 6.12, qlen > limit since, and an
 * accepted SYN adds one). What is left, a SYN queue at its limit, could be
 * the SYN's own request: such a SYN is not judged, and counted as such.
 */
static __always_inline __u32 syn_outcome_by_state(struct sock *l, struct net *net, __u32 *reason)
{
	__u32 backlog = BPF_CORE_READ(l, sk_ack_backlog);
	__u32 max = BPF_CORE_READ(l, sk_max_ack_backlog);
	__s32 qlen = BPF_CORE_READ((struct inet_connection_sock *)l, icsk_accept_queue.qlen.counter);
	__u8 cookies = BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies);

	if (!l)
		return 0;
	if (cookies == 2) {
		*reason = LISTEN_SYNCOOKIES_ALWAYS;
		if (backlog > max) {
			*reason = LISTEN_ACCEPT_QUEUE_FULL;
			return EVENT_SYN_DROP;
		}
		return EVENT_SYN_COOKIE;
	}
	if (qlen > (__s32)max + 1 && (!cookies || backlog <= max)) {
		*reason = LISTEN_SYN_QUEUE_FULL;
		return cookies ? EVENT_SYN_COOKIE : EVENT_SYN_DROP;
	}
	if (backlog > max) {
		*reason = LISTEN_ACCEPT_QUEUE_FULL;
		return EVENT_SYN_DROP;
	}
	if (qlen >= (__s32)max)
		counter_inc(&syn_unjudged, 0);
	return 0;
}

#endif /* LISTEN_BPF_H */
