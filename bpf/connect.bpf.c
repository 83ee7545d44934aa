/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector connect: syn_retransmit, connect_timeout, connect_refused.
 *
 * A connect() puts the socket in SYN_SENT (sock:inet_sock_set_state, in the
 * caller's process: owners.bpf.h records the owner and, in the same record,
 * the start time). Each SYN retransmit passes tcp:tcp_retransmit_skb with
 * the socket still in SYN_SENT (from the retransmit timer: the owner comes
 * from owners.bpf.h's records).
 * The attempt ends SYN_SENT -> CLOSE with sk_err already set: tcp_write_err()
 * sets ETIMEDOUT before tcp_done() (or a soft ICMP error seen meanwhile,
 * EHOSTUNREACH..., which is not reported as a timeout), tcp_reset() sets
 * ECONNREFUSED before tcp_done(). Which retransmits TCPSynRetrans counts is
 * read from the socket's total_retrans (see on_syn_retransmit()).
 */
#include "common.bpf.h"
#include "owners.bpf.h"
#include "conn.bpf.h"

#define ETIMEDOUT 110
#define ECONNREFUSED 111

/* Per destination (the aggregation key of syn_retransmit): the connection
 * that retransmitted a SYN to it last, and when. A connection whose SYN
 * goes out while no other one retransmitted to its destination since its
 * previous SYN is alone there: it gets a line per retransmit, at once. */
struct syn_rtx_last {
	__u64 sk;
	__u64 ts_ns;
};

DEFINE_MAP(syn_rtx_dest, BPF_MAP_TYPE_LRU_HASH, struct agg_key, struct syn_rtx_last, 4096);

/* SYN retransmits no syn_retransmit line counted, found when connect()
 * ends: the socket's own total_retrans is past what the lines took from it
 * (conn_start.last). Up to 6.16 a retransmit whose transmit failed fires no
 * tracepoint, and a run the kernel did not make leaves no trace either; a
 * later retransmit of the socket folds such ones into its line, but nothing
 * follows the last ones. Reported at exit, so that the lines and
 * TCPSynRetrans are seen to differ by exactly this. */
DEFINE_COUNTERS(syn_rtx_unseen, 1);

/* Per destination: SYN retransmits counted in the aggregation table, by
 * attempt number (slot i: attempt i + 1; the last slot, that attempt and
 * later ones). Like the table, the kernel only adds: user space prints the
 * range of the slots that grew since its last line. */
#define SYN_ATTEMPT_SLOTS 32

struct syn_attempts {
	__u64 n[SYN_ATTEMPT_SLOTS];
};

DEFINE_MAP(syn_rtx_attempts, BPF_MAP_TYPE_LRU_HASH, struct agg_key, struct syn_attempts, 4096);

/* The connection, and what decides when connect() gives up
 * (tcp_write_timeout()). */
static __always_inline void read_conn_syn(struct sock *sk, struct conn_snapshot *c)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct net *net;
	struct netns_ipv4 *ipv4;

	read_conn(sk, c);
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	ipv4 = net_ipv4(net);
	c->syn_retries = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_syn_retries);
	/* 6.5+: the first SYN retransmits keep the initial RTO. */
	if (bpf_core_field_exists(ipv4->sysctl_tcp_syn_linear_timeouts)) {
		c->syn_linear_timeouts = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_syn_linear_timeouts);
		c->limits_known |= LIMIT_SYN_LINEAR;
	}
	c->syncnt = BPF_CORE_READ(icsk, icsk_syn_retries);
	c->user_timeout_ms = BPF_CORE_READ(icsk, icsk_user_timeout);
	c->rto = BPF_CORE_READ(icsk, icsk_rto);
	/* 6.15+: TCP_RTO_MAX_MS per socket; TCP_RTO_MAX (120 s) before. */
	if (bpf_core_field_exists(icsk->icsk_rto_max))
		c->rto_max = BPF_CORE_READ(icsk, icsk_rto_max);
	c->retransmits = BPF_CORE_READ(icsk, icsk_retransmits);
	c->limits_known |= LIMIT_SYN;
}

/* A zeroed event in the scratch slot, stamped now. */
static __always_inline struct agg_value *conn_template(__u8 type, __u8 path)
{
	struct agg_value *t = agg_template_on(type, path);

	if (!t)
		return NULL;
	t->ev.count = 1;
	t->ev.ts_ns = bpf_ktime_get_ns();
	return t;
}

/* One line now, for events whose rate the kernel bounds: SYN retransmits
 * are at least 1 s apart per connect(), and each line has its attempt. */
static __always_inline void conn_submit(struct agg_value *t)
{
	if (submit(&t->ev))
		counter_inc(&lost, t->ev.type);
}

static __always_inline void conn_fill_start(struct event *e, struct conn_start *cs, struct sock *sk, __u64 now, __u8 path)
{
	conn_owner(e, sk, path);
	if (cs) {
		e->c.elapsed_ns = now - cs->start_ns;
		e->c.syn_rtx = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans) - cs->base;
		e->c.start_known = 1;
	}
}

/* The destination key of connect outcomes: namespace, port, address. */
static __always_inline void key_dest(struct agg_key *key, struct sock *sk, __u32 type)
{
	key->type = type;
	key->sk = (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) << 32 |
		  bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	key_peer(key, sk);
}

/* Whether another connection retransmitted a SYN to this one's destination
 * since this one's previous SYN (prev_ns): then many connections wait on
 * that destination (a frozen server, a dead backend behind a pool) and a
 * line each would flood the output. */
static __always_inline bool syn_rtx_crowded(struct agg_key *key, struct sock *sk, __u64 prev_ns, __u64 now)
{
	struct syn_rtx_last *l = bpf_map_lookup_elem(&syn_rtx_dest, key);
	struct syn_rtx_last mine = { .sk = (__u64)sk, .ts_ns = now };
	bool crowded = l && l->sk != (__u64)sk && l->ts_ns >= prev_ns;

	if (l) {
		l->sk = mine.sk;
		l->ts_ns = now;
	} else {
		bpf_map_update_elem(&syn_rtx_dest, key, &mine, BPF_ANY);
	}
	return crowded;
}

/* n retransmits of attempt number `attempt` counted in the aggregation
 * table, by attempt. */
static __always_inline void syn_attempts_add(struct agg_key *key, __u32 attempt, __u32 n)
{
	struct syn_attempts *a = bpf_map_lookup_elem(&syn_rtx_attempts, key);
	__u32 slot = attempt ? attempt - 1 : 0;

	if (!n)
		return;
	if (!a) {
		static const struct syn_attempts zero;

		bpf_map_update_elem(&syn_rtx_attempts, key, &zero, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&syn_rtx_attempts, key);
		if (!a)
			return;
	}
	if (slot >= SYN_ATTEMPT_SLOTS)
		slot = SYN_ATTEMPT_SLOTS - 1;
	/* The verifier bounds the register it compared; clang may index with
	 * a copy it did not. The mask bounds the one used. */
	barrier_var(slot);
	slot &= SYN_ATTEMPT_SLOTS - 1;
	__sync_fetch_and_add(&a->n[slot], n);
}

/* The SYN's sequence number: tcp_connect_init() sets snd_una to the ISN,
 * and it stays there until the SYN-ACK. NAT rewrites addresses and ports,
 * not this: it ties a client's SYN to what a host behind the NAT did with
 * it. */
static __always_inline __u32 syn_isn(struct sock *sk)
{
	return BPF_CORE_READ((struct tcp_sock *)sk, snd_una);
}

/*
 * A SYN retransmit, counted as the kernel counts it. __tcp_retransmit_skb()
 * adds to TCPSynRetrans and tp->total_retrans before it hands the SYN to
 * the IP layer; a local transmit failure after that (a full backlog, a
 * qdisc or netfilter drop on output) still counts. Up to 6.16 the
 * tracepoint fires only for a transmit that succeeded, from 6.17 for every
 * attempt, including those that gave up before counting (-EBUSY: the last
 * copy is still in a host queue). So the socket's own total_retrans says
 * how many counted retransmits this call stands for: 0 (an attempt that
 * did not count), 1, or more when failed ones went unseen before it.
 */
static __shared_hook void on_syn_retransmit(struct sock *sk, __u8 path, int err)
{
	__u32 total = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	__u64 now = bpf_ktime_get_ns(), prev_ns;
	struct agg_key dest = {};
	struct conn_start *cs;
	struct agg_value *v;
	SCRATCH_EVENT(t);
	bool counted;
	__u32 n = 1;

	cs = conn_start_of(sk);
	if (cs) {
		if (total == cs->last)
			return;
		n = total - cs->last;
		cs->last = total; /* the socket's timer runs one at a time */
		prev_ns = cs->last_ns;
		cs->last_ns = now;
	} else {
		prev_ns = now - 1000000000ULL; /* TCP_TIMEOUT_INIT: the shortest backoff */
	}
	if (!conn_owner_wanted(sk, path) || !conn_sock_wanted(sk))
		return;
	key_dest(&dest, sk, EVENT_SYN_RETRANSMIT);
	if (!syn_rtx_crowded(&dest, sk, prev_ns, now)) {
		t = conn_template(EVENT_SYN_RETRANSMIT, path);
		if (!t)
			return;
		t->ev.count = n;
		t->ev.ret = err;
		read_conn_syn(sk, &t->ev.c);
		conn_fill_start(&t->ev, cs, sk, t->ev.ts_ns, path);
		t->ev.c.seq = syn_isn(sk);
		conn_submit(t);
		return;
	}
	/* Aggregated per destination like connect_timeout; the table counts 1
	 * per call, the rest of n (failed transmits unseen before 6.17) is
	 * added here, and each attempt number is kept for the line's range. */
	if (agg_hit(&dest, 0)) {
		v = bpf_map_lookup_elem(&aggregates, &dest);
		if (v && n > 1)
			__sync_fetch_and_add(&v->count, n - 1);
		syn_attempts_add(&dest, cs ? total - cs->base : BPF_CORE_READ((struct inet_connection_sock *)sk, icsk_retransmits), n);
		return;
	}
	t = agg_template_on(EVENT_SYN_RETRANSMIT, path);
	if (!t)
		return;
	t->ev.ret = err;
	read_conn_syn(sk, &t->ev.c);
	conn_fill_start(&t->ev, cs, sk, now, path);
	t->ev.c.seq = syn_isn(sk);
	/* An existing entry counts this one in the table; a new one sends
	 * the template as the destination's first line. */
	counted = bpf_map_lookup_elem(&aggregates, &dest) != NULL;
	agg_commit(&dest, t, 0);
	v = bpf_map_lookup_elem(&aggregates, &dest);
	if (v && n > 1)
		__sync_fetch_and_add(&v->count, n - 1);
	syn_attempts_add(&dest, cs ? t->ev.c.syn_rtx : t->ev.c.retransmits, counted ? n : n - 1);
}

/* At connect()'s end: the retransmits of sk that no syn_retransmit line
 * counted (syn_rtx_unseen). */
static __always_inline void syn_rtx_settle(struct sock *sk, struct conn_start *cs)
{
	__u32 total = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);

	if (total == cs->last)
		return;
	counter_add(&syn_rtx_unseen, 0, total - cs->last);
	cs->last = total;
}

/* SYN_SENT -> CLOSE with an error set: how connect() ended. One line per
 * destination and interval: a pool hammering a dead or closed backend
 * must not flood the output. */
static __always_inline void on_connect_end(struct sock *sk, __u8 path)
{
	struct agg_key key = {};
	struct conn_start *cs;
	SCRATCH_EVENT(t);
	__u8 type;
	int err;

	err = BPF_CORE_READ(sk, sk_err);
	if (err == ECONNREFUSED)
		type = EVENT_CONNECT_REFUSED;
	else if (err == ETIMEDOUT)
		type = EVENT_CONNECT_TIMEOUT;
	else
		return;
	if (!conn_owner_wanted(sk, path) || !conn_sock_wanted(sk))
		return;
	cs = conn_start_of(sk);
	if (cs && (hooks_on & HOOK_SYN_RTX))
		syn_rtx_settle(sk, cs);
	key_dest(&key, sk, type);
	t = agg_first(&key, type, path);
	if (!t)
		return;
	t->ev.ret = -err;
	read_conn_syn(sk, &t->ev.c);
	conn_fill_start(&t->ev, cs, sk, bpf_ktime_get_ns(), path);
	agg_commit(&key, t, 0);
}

/* fentry and kprobe paths: tcp_connect() runs after tcp_v4_connect() (or
 * the IPv6 one) set SYN_SENT, so the owner record that state change wrote
 * is there to take the start; a socket the full table refused has none. */
static __always_inline void on_connect_start(struct sock *sk)
{
	struct owner_rec *r = owner_record(sock_addr(sk));

	if (r)
		conn_start_now(sk, &r->start);
}

/* inet_sock_set_state (tcptrace.bpf.c), every TCP state change of the
 * host: two compares and out, unless a connect() ends. Its start was
 * recorded with its owner (owner_set_state()). */
static __shared_hook void conn_set_state(struct sock *sk, int oldstate, int newstate)
{
	if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE)
		on_connect_end(sk, PATH_TRACEPOINT);
}

static __always_inline void on_tcp_done(struct sock *sk, __u8 path)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		on_connect_end(sk, path);
}

/* fentry and kprobe paths: tcp_connect() is where every connect() sends
 * its first SYN; tcp_done() is where a failed one closes, sk_err already
 * set. */
/* fentry_tcp_connect, kprobe_tcp_connect */
ENTRY_PROGS(tcp_connect, on_connect_start(sk), struct sock *sk)
/* fentry_tcp_done, kprobe_tcp_done */
ENTRY_PROGS(tcp_done, on_tcp_done(sk, path), struct sock *sk)
