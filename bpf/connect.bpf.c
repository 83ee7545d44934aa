/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector: connection set-up and teardown (issue 7).
 *
 * syn_retransmit, connect_timeout, connect_refused. A connect() puts the
 * socket in SYN_SENT (sock:inet_sock_set_state, in the caller's process:
 * owner.bpf.c records the owner, conn_starts the start time). Each SYN
 * retransmit passes tcp:tcp_retransmit_skb with the socket still in
 * SYN_SENT (from the retransmit timer: the owner comes from owner.bpf.c).
 * The attempt ends SYN_SENT -> CLOSE with sk_err already set: tcp_write_err()
 * sets ETIMEDOUT before tcp_done() (or a soft ICMP error seen meanwhile,
 * EHOSTUNREACH..., which is not reported as a timeout), tcp_reset() sets
 * ECONNREFUSED before tcp_done(). Which retransmits TCPSynRetrans counts is
 * read from the socket's total_retrans (see on_syn_retransmit()).
 *
 * port_exhaustion. __inet_hash_connect() returns -EADDRNOTAVAIL when no
 * local port is free; tcp_v4_connect()/tcp_v6_connect() then set CLOSE
 * (SYN_SENT -> CLOSE, sk_err 0, in the caller's process) and return the
 * error. Tracepoint path: that transition on a socket that never got a
 * local port (inet_num and inet_sport still 0): every later failure, and a
 * close() while connecting, happens with the port assigned. The only other
 * way there is -ENOMEM for a bind bucket. A bound socket whose 4-tuple is
 * taken (also -EADDRNOTAVAIL) has its port: only the fentry/kprobe path,
 * the return value of inet_hash_connect() and inet6_hash_connect(), sees it.
 * (The connect syscall's exit tracepoint would say the errno, but enabling
 * syscall tracepoints patches the syscall exit path of every task, and did
 * crash a 6.12 guest under QEMU.)
 *
 * timewait_overflow. tcp_time_wait() asks inet_twsk_alloc() for a TIME_WAIT
 * socket, which refuses when the namespace already holds tcp_max_tw_buckets
 * of them; the socket is then closed at once (TCPTimeWaitOverflow) instead
 * of being replaced by a TIME_WAIT socket. Either way tcp_done() moves it
 * from FIN_WAIT1/FIN_WAIT2/CLOSING to CLOSE. When the TIME_WAIT socket was
 * made, its timer was armed just before, on this CPU (inet_twsk_schedule():
 * timer:timer_start with tw_timer_handler); so a close from those states
 * with no such timer for the same ports, while the namespace is at its
 * limit, is an overflow. fentry/kprobe: inet_twsk_alloc() returning NULL.
 *
 * paws_reject. skb:kfree_skb with the drop reasons TCP_RFC7323_PAWS (5.19,
 * PAWSEstab), TCP_RFC7323_PAWS_ACK (6.14, PAWSOldAck), TCP_RFC7323_TSECR
 * (6.15, TSEcrRejected) and TCP_RFC7323_TW_PAWS (6.16, PAWSTimewait), all
 * resolved by name. The segment's addresses and TSval come from its headers;
 * the socket that refused it (rx_sk, 6.11+) gives the timestamp it holds.
 * The segment's sequence number and the namespace's tcp_rfc1337 go with it:
 * user space ties a SYN to the client's syn_retransmit by that number (the
 * client's ISN, which NAT leaves alone).
 *
 * reset. tcp:tcp_send_reset and tcp:tcp_receive_reset on a connection past
 * its handshake. From 6.10 tcp_send_reset also fires without a socket (a
 * segment nobody owns) and passes the reset's reason (enum sk_rst_reason).
 */
#ifndef CONNECT_BPF_C
#define CONNECT_BPF_C

/* Included after listen.bpf.c: uses owner.bpf.c's maps and skb_net(). */

#define ETIMEDOUT 110
#define ECONNREFUSED 111
#define EADDRNOTAVAIL 99

#define RST_SENT 1
#define RST_RECEIVED 2

#define TCPF(s) (1U << (s))
/* States of a connection past its handshake, where a reset means one side
 * aborted it. Sent resets add CLOSE: close() with unread data, SO_LINGER 0
 * and tcp_disconnect() set CLOSE before they send the reset. */
#define RST_STATES (TCPF(TCP_ESTABLISHED) | TCPF(TCP_FIN_WAIT1) | TCPF(TCP_FIN_WAIT2) | \
		    TCPF(TCP_CLOSE_WAIT) | TCPF(TCP_CLOSING) | TCPF(TCP_LAST_ACK))
#define TW_CANDIDATES (TCPF(TCP_FIN_WAIT1) | TCPF(TCP_FIN_WAIT2) | TCPF(TCP_CLOSING))

/* tw_timer_handler's address (/proc/kallsyms): the TIME_WAIT timer. */
const volatile __u64 cfg_tw_timer_handler = 0;

/* One connect() in progress: when it began. Its owner is in owner.bpf.c's
 * map, which the same state change fills. Entries are not deleted when the
 * connection is made (that would cost every connection a hash delete): the
 * next connect() on the same socket address overwrites them, and the LRU
 * recycles the rest. */
struct conn_start {
	__u64 start_ns;
	__u64 last_ns; /* when the last SYN went out (the first: start_ns) */
	__u32 base;    /* tp->total_retrans at connect() */
	__u32 last;    /* tp->total_retrans at the last SYN retransmit seen */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* struct sock * */
	__type(value, struct conn_start);
} conn_starts SEC(".maps");

/* Per destination (the aggregation key of syn_retransmit): the connection
 * that retransmitted a SYN to it last, and when. A connection whose SYN
 * goes out while no other one retransmitted to its destination since its
 * previous SYN is alone there: it gets a line per retransmit, at once. */
struct syn_rtx_last {
	__u64 sk;
	__u64 ts_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct agg_key);
	__type(value, struct syn_rtx_last);
} syn_rtx_dest SEC(".maps");

/* Per destination: SYN retransmits counted in the aggregation table, by
 * attempt number (slot i: attempt i + 1; the last slot, that attempt and
 * later ones). Like the table, the kernel only adds: user space prints the
 * range of the slots that grew since its last line. */
#define SYN_ATTEMPT_SLOTS 32

struct syn_attempts {
	__u64 n[SYN_ATTEMPT_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct agg_key);
	__type(value, struct syn_attempts);
} syn_rtx_attempts SEC(".maps");

/* The TIME_WAIT socket whose timer this CPU armed last. */
struct tw_armed {
	__u64 ts_ns;
	__u64 net;
	__u32 daddr;
	__u16 dport; /* network order */
	__u16 num;   /* local port */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tw_armed);
} tw_armed SEC(".maps");

/* kprobe path: the socket passed to the function whose return is awaited. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* tid */
	__type(value, __u64);
} kprobe_socks SEC(".maps");

/* net->ipv4, whatever its offset in this kernel's struct net. */
static __always_inline struct netns_ipv4 *net_ipv4(struct net *net)
{
	return (void *)net + bpf_core_field_offset(struct net, ipv4);
}

/* 5.10 counted TIME_WAIT sockets in an atomic_t; 6.1 made it a refcount
 * starting at 1. The death row is embedded in netns_ipv4 in every kernel
 * read, but 6.1's per-netns ehash series briefly had a pointer: both read. */
struct inet_timewait_death_row___old {
	atomic_t tw_count;
};

struct netns_ipv4___dr_ptr {
	struct inet_timewait_death_row *tcp_death_row;
};

static __always_inline void read_tw_limits(struct net *net, struct conn_snapshot *c)
{
	struct netns_ipv4 *ipv4 = net_ipv4(net);
	struct inet_timewait_death_row *dr;
	int count = 0;

	if (bpf_core_field_size(ipv4->tcp_death_row) == sizeof(void *))
		dr = BPF_CORE_READ((struct netns_ipv4___dr_ptr *)ipv4, tcp_death_row);
	else
		dr = (void *)ipv4 + bpf_core_field_offset(struct netns_ipv4, tcp_death_row);
	if (!dr)
		return;
	if (bpf_core_field_exists(dr->tw_refcount)) {
		count = BPF_CORE_READ(dr, tw_refcount.refs.counter) - 1;
	} else {
		struct inet_timewait_death_row___old *old = (void *)dr;

		count = BPF_CORE_READ(old, tw_count.counter);
	}
	c->tw_count = count < 0 ? 0 : count;
	c->max_tw_buckets = BPF_CORE_READ(dr, sysctl_max_tw_buckets);
	c->limits_known |= LIMIT_TW;
}

/* ip_local_port_range: int range[2] up to 6.6, one u32 (hi << 16 | lo)
 * from 6.7 (local flavours: CO-RE will not match an int to an array).
 * tcp_tw_reuse: int, then u8 (the probed read takes either size). */
struct local_ports___packed {
	u32 range;
};

struct local_ports___pair {
	int range[2];
};

static __always_inline void read_port_limits(struct net *net, struct conn_snapshot *c)
{
	struct netns_ipv4 *ipv4 = net_ipv4(net);
	void *lp = (void *)ipv4 + bpf_core_field_offset(struct netns_ipv4, ip_local_ports);

	if (bpf_core_field_exists(struct local_ports___packed, range)) {
		__u32 v = BPF_CORE_READ((struct local_ports___packed *)lp, range);

		c->port_lo = v & 0xffff;
		c->port_hi = v >> 16;
	} else if (bpf_core_field_exists(struct local_ports___pair, range)) {
		struct local_ports___pair *p = lp;

		c->port_lo = BPF_CORE_READ(p, range[0]);
		c->port_hi = BPF_CORE_READ(p, range[1]);
	}
	c->tw_reuse = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_tw_reuse);
	c->limits_known |= LIMIT_PORTS;
	read_tw_limits(net, c);
}

/* What decides when connect() gives up (tcp_write_timeout()). */
static __always_inline void read_syn_limits(struct sock *sk, struct conn_snapshot *c)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	struct netns_ipv4 *ipv4 = net_ipv4(net);

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

/* Addresses, ports and namespace: struct sock_common, so this reads a
 * TIME_WAIT or request socket as well as a full one. */
static __always_inline void read_conn(struct sock *sk, struct conn_snapshot *c)
{
	c->sk = (__u64)sk;
	c->family = read_addrs(sk, &c->saddr, &c->daddr, &c->sport, &c->dport);
	c->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	c->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (c->state != TCP_TIME_WAIT && c->state != TCP_NEW_SYN_RECV) {
		c->ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
		/* tcp_set_state(CLOSE) releases the local port (inet_num = 0)
		 * before the state-change tracepoint; inet_sport keeps it. */
		if (!c->sport)
			c->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	}
}

/* The --port and -4/-6 filters. Unlike sock_wanted(), the local port comes
 * from inet_sport when inet_num is 0: a socket moved to CLOSE (a failed
 * connect, a close without TIME_WAIT, an aborting close) has released its
 * port before the state-change tracepoint fires. */
static __always_inline bool conn_sock_wanted(struct sock *sk)
{
	__u16 sport, dport;

	if (cfg_family && BPF_CORE_READ(sk, __sk_common.skc_family) != cfg_family)
		return false;
	if (!cfg_port)
		return true;
	sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!sport)
		sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return sport == cfg_port || dport == cfg_port;
}

/* A zeroed event in the scratch slot, stamped now. */
static __always_inline struct agg_value *conn_template(__u8 type, __u8 path)
{
	struct agg_value *t = agg_template(type);

	if (!t)
		return NULL;
	t->ev.path = path;
	t->ev.count = 1;
	t->ev.ts_ns = bpf_ktime_get_ns();
	return t;
}

/* One line now, for events whose rate the kernel bounds: SYN retransmits
 * are at least 1 s apart per connect(), and each line has its attempt. */
static __always_inline void conn_submit(struct agg_value *t)
{
	if (submit(&t->ev))
		count_lost(t->ev.type);
}

/* Owner of a connection in timer or softirq context. A socket the kernel
 * passed to a tracing program (every path but kprobes) has its owner in its
 * own storage, kept however many sockets the host holds; kprobes have only
 * the table. path is a constant at every call site, so the kprobe programs
 * hold no storage call the verifier would refuse them. */
static __always_inline void conn_owner(struct event *e, struct sock *sk, __u8 path)
{
	if (path == PATH_KPROBE)
		e->c.owner_known = fill_owner(e, sk);
	else
		e->c.owner_known = fill_sock_owner(e, sk, false);
}

static __always_inline bool conn_owner_wanted(struct sock *sk, __u8 path)
{
	if (path == PATH_KPROBE)
		return owner_wanted(sk);
	return sock_owner_wanted(sk, false);
}

/* ---- syn_retransmit, connect_timeout, connect_refused ---------------- */

static __always_inline void conn_fill_start(struct event *e, struct conn_start *cs, struct sock *sk, __u64 now, __u8 path)
{
	conn_owner(e, sk, path);
	if (cs) {
		e->c.elapsed_ns = now - cs->start_ns;
		e->c.syn_rtx = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans) - cs->base;
		e->c.start_known = 1;
	}
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
/* The peer's address in an aggregation key (struct agg_key): events
 * aggregated per destination get one line per address. */
static __always_inline void key_peer(struct agg_key *key, struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6)
		BPF_CORE_READ_INTO(&key->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__u32 *)key->addr, sk, __sk_common.skc_daddr);
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

static __always_inline void on_syn_retransmit(struct sock *sk, __u8 path, int err)
{
	__u32 total = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	__u64 key = (__u64)sk, now = bpf_ktime_get_ns(), prev_ns;
	struct agg_key dest = {};
	struct conn_start *cs;
	struct agg_value *v;
	SCRATCH_EVENT(t);
	bool counted;
	__u32 n = 1;

	cs = bpf_map_lookup_elem(&conn_starts, &key);
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
		read_conn(sk, &t->ev.c);
		read_syn_limits(sk, &t->ev.c);
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
	t = agg_template(EVENT_SYN_RETRANSMIT);
	if (!t)
		return;
	t->ev.path = path;
	t->ev.ret = err;
	read_conn(sk, &t->ev.c);
	read_syn_limits(sk, &t->ev.c);
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

/* SYN_SENT -> CLOSE with an error set: how connect() ended. One line per
 * destination and interval: a pool hammering a dead or closed backend
 * must not flood the output. */
static __always_inline void on_connect_end(struct sock *sk, __u8 path)
{
	struct agg_key key = {};
	__u64 skey = (__u64)sk;
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
	key_dest(&key, sk, type);
	if (agg_hit(&key, 0))
		return;
	t = agg_template(type);
	if (!t)
		return;
	t->ev.path = path;
	t->ev.ret = -err;
	cs = bpf_map_lookup_elem(&conn_starts, &skey);
	read_conn(sk, &t->ev.c);
	read_syn_limits(sk, &t->ev.c);
	conn_fill_start(&t->ev, cs, sk, bpf_ktime_get_ns(), path);
	agg_commit(&key, t, 0);
}

static __always_inline void on_connect_start(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct conn_start cs = { .start_ns = bpf_ktime_get_ns() };

	cs.last_ns = cs.start_ns;

	cs.base = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	cs.last = cs.base;

	bpf_map_update_elem(&conn_starts, &key, &cs, BPF_ANY);
}

/* A connect() start is wanted only while the socket is in SYN_SENT: its
 * retransmits and how it ends. Dropped when the socket leaves SYN_SENT, after
 * the handlers of that change (on_connect_end() reads it), so the table holds
 * connections being made, not every connection the host ever made. Called
 * from the owner-tracking program (bpf/shared_hooks.bpf.c), which runs
 * whenever connection events are traced, on every path. */
static __always_inline void conn_forget(struct sock *sk, int oldstate)
{
	__u64 key = (__u64)sk;

	if (oldstate == TCP_SYN_SENT)
		bpf_map_delete_elem(&conn_starts, &key);
}

/* inet_sock_set_state (bpf/shared_hooks.bpf.c), every TCP state change of
 * the host: two compares and out, unless the socket enters or leaves
 * SYN_SENT. */
static __always_inline void conn_set_state(struct sock *sk, int oldstate, int newstate)
{
	if (newstate == TCP_SYN_SENT) {
		if (sk->sk_protocol == IPPROTO_TCP)
			on_connect_start(sk);
		return;
	}
	if (oldstate == TCP_SYN_SENT && newstate == TCP_CLOSE)
		on_connect_end(sk, PATH_TRACEPOINT);
}

/* Up to 6.16: fires only for a retransmit that was sent. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	on_syn_retransmit(sk, PATH_TRACEPOINT, 0);
	return 0;
}

/* 6.17+: fires for every attempt, with its result. */
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_tcp_retransmit_skb_err, struct sock *sk, struct sk_buff *skb, int err)
{
	if (sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	on_syn_retransmit(sk, PATH_TRACEPOINT, err);
	return 0;
}

/* fentry path: tcp_connect() is where every connect() sends its first SYN;
 * tcp_done() is where a failed one closes, sk_err already set. */
SEC("fentry/tcp_connect")
int BPF_PROG(fentry_tcp_connect, struct sock *sk)
{
	on_connect_start(sk);
	return 0;
}

SEC("fexit/tcp_retransmit_skb")
int BPF_PROG(fexit_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb, int segs, int ret)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_SYN_SENT)
		return 0;
	on_syn_retransmit(sk, PATH_FENTRY, ret);
	return 0;
}

SEC("fentry/tcp_done")
int BPF_PROG(fentry_tcp_done, struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		on_connect_end(sk, PATH_FENTRY);
	return 0;
}

SEC("kprobe/tcp_connect")
int BPF_KPROBE(kprobe_tcp_connect, struct sock *sk)
{
	on_connect_start(sk);
	return 0;
}

SEC("kprobe/tcp_retransmit_skb")
int BPF_KPROBE(kprobe_tcp_retransmit_skb, struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 v = (__u64)sk;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		bpf_map_update_elem(&kprobe_socks, &tid, &v, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_retransmit_skb")
int BPF_KRETPROBE(kretprobe_tcp_retransmit_skb, int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&kprobe_socks, &tid);
	struct sock *sk;

	if (!v)
		return 0;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(&kprobe_socks, &tid);
	on_syn_retransmit(sk, PATH_KPROBE, ret);
	return 0;
}

SEC("kprobe/tcp_done")
int BPF_KPROBE(kprobe_tcp_done, struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT)
		on_connect_end(sk, PATH_KPROBE);
	return 0;
}

/* ---- port_exhaustion ------------------------------------------------- */

/* One line per destination and interval: a client spinning on connect()
 * must not flood the output. */
static __always_inline void port_exhausted(struct conn_snapshot *c, __u32 tgid, const __u8 *comm, __u8 path)
{
	struct agg_key key = {
		.sk = ((__u64)c->netns << 32) | c->dport,
		.type = EVENT_PORT_EXHAUSTION,
	};
	SCRATCH_EVENT(t);

	__builtin_memcpy(key.addr, c->daddr, sizeof(key.addr));
	if (agg_hit(&key, 0))
		return;
	t = agg_template(EVENT_PORT_EXHAUSTION);
	if (!t)
		return;
	t->ev.path = path;
	t->ev.ret = -EADDRNOTAVAIL;
	t->ev.pid = tgid;
	t->ev.tid = (__u32)bpf_get_current_pid_tgid();
	__builtin_memcpy(t->ev.comm, comm, sizeof(t->ev.comm));
	__builtin_memcpy(&t->ev.c, c, sizeof(*c));
	t->ev.c.owner_known = 1;
	agg_commit(&key, t, 0);
}

static __always_inline bool fill_port_snapshot(struct sock *sk, struct conn_snapshot *c)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	if (!conn_sock_wanted(sk))
		return false;
	read_conn(sk, c);
	read_port_limits(net, c);
	return true;
}

/* SYN_SENT -> CLOSE with no error on a socket that never got a local port:
 * __inet_hash_connect() found none free. Every other state change of the
 * host leaves after two compares. */
static __always_inline void port_set_state(struct sock *sk, int oldstate, int newstate)
{
	struct conn_snapshot c = {};
	__u8 comm[TASK_COMM_LEN];
	__u32 tgid;

	if (oldstate != TCP_SYN_SENT || newstate != TCP_CLOSE)
		return;
	if (sk->__sk_common.skc_num || BPF_CORE_READ((struct inet_sock *)sk, inet_sport) || BPF_CORE_READ(sk, sk_err))
		return;
	tgid = bpf_get_current_pid_tgid() >> 32; /* connect() runs in its caller */
	if (!pid_wanted(tgid))
		return;
	if (!fill_port_snapshot(sk, &c))
		return;
	bpf_get_current_comm(&comm, sizeof(comm));
	port_exhausted(&c, tgid, comm, PATH_TRACEPOINT);
}

static __always_inline void on_hash_connect(struct sock *sk, int ret, __u8 path)
{
	struct conn_snapshot c = {};
	__u8 comm[TASK_COMM_LEN];
	__u32 tgid;

	if (ret != -EADDRNOTAVAIL)
		return;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!pid_wanted(tgid))
		return;
	if (!fill_port_snapshot(sk, &c))
		return;
	bpf_get_current_comm(&comm, sizeof(comm));
	port_exhausted(&c, tgid, comm, path);
}

SEC("fexit/inet_hash_connect")
int BPF_PROG(fexit_inet_hash_connect, struct inet_timewait_death_row *dr, struct sock *sk, int ret)
{
	on_hash_connect(sk, ret, PATH_FENTRY);
	return 0;
}

SEC("fexit/inet6_hash_connect")
int BPF_PROG(fexit_inet6_hash_connect, struct inet_timewait_death_row *dr, struct sock *sk, int ret)
{
	on_hash_connect(sk, ret, PATH_FENTRY);
	return 0;
}

static __always_inline void kprobe_stash(struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 v = (__u64)sk;

	bpf_map_update_elem(&kprobe_socks, &tid, &v, BPF_ANY);
}

static __always_inline struct sock *kprobe_unstash(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(&kprobe_socks, &tid);
	struct sock *sk;

	if (!v)
		return NULL;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(&kprobe_socks, &tid);
	return sk;
}

SEC("kprobe/inet_hash_connect")
int BPF_KPROBE(kprobe_inet_hash_connect, struct inet_timewait_death_row *dr, struct sock *sk)
{
	kprobe_stash(sk);
	return 0;
}

SEC("kretprobe/inet_hash_connect")
int BPF_KRETPROBE(kretprobe_inet_hash_connect, int ret)
{
	struct sock *sk = kprobe_unstash();

	if (sk)
		on_hash_connect(sk, ret, PATH_KPROBE);
	return 0;
}

SEC("kprobe/inet6_hash_connect")
int BPF_KPROBE(kprobe_inet6_hash_connect, struct inet_timewait_death_row *dr, struct sock *sk)
{
	kprobe_stash(sk);
	return 0;
}

SEC("kretprobe/inet6_hash_connect")
int BPF_KRETPROBE(kretprobe_inet6_hash_connect, int ret)
{
	struct sock *sk = kprobe_unstash();

	if (sk)
		on_hash_connect(sk, ret, PATH_KPROBE);
	return 0;
}

/* ---- timewait_overflow ---------------------------------------------- */

/* One line per namespace and interval. */
static __always_inline void tw_overflow(struct sock *sk, __u8 path, bool limits_read, struct conn_snapshot *given)
{
	struct agg_key key = { .type = EVENT_TIMEWAIT_OVERFLOW };
	SCRATCH_EVENT(t);
	struct net *net;

	if (!conn_sock_wanted(sk) || !conn_owner_wanted(sk, path))
		return;
	key.sk = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (agg_hit(&key, 0))
		return;
	t = agg_template(EVENT_TIMEWAIT_OVERFLOW);
	if (!t)
		return;
	t->ev.path = path;
	if (given)
		__builtin_memcpy(&t->ev.c, given, sizeof(t->ev.c));
	read_conn(sk, &t->ev.c);
	if (!limits_read) {
		net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
		read_tw_limits(net, &t->ev.c);
	}
	conn_owner(&t->ev, sk, path);
	agg_commit(&key, t, 0);
}

/* timer_start (bpf/shared_hooks.bpf.c) for the TIME_WAIT timer
 * (tw_timer_handler): armed for every new TIME_WAIT socket, and again by
 * every segment that reaches one. */
static __always_inline void tw_timer_start(struct timer_list *timer)
{
	struct inet_timewait_sock *tw;
	struct tw_armed *a;
	__u32 zero = 0;

	a = bpf_map_lookup_elem(&tw_armed, &zero);
	if (!a)
		return;
	tw = (void *)timer - bpf_core_field_offset(struct inet_timewait_sock, tw_timer);
	a->ts_ns = bpf_ktime_get_ns();
	a->net = (__u64)BPF_CORE_READ(tw, __tw_common.skc_net.net);
	a->dport = BPF_CORE_READ(tw, __tw_common.skc_dport);
	a->num = BPF_CORE_READ(tw, __tw_common.skc_num);
	a->daddr = BPF_CORE_READ(tw, __tw_common.skc_daddr);
}

/* inet_sock_set_state (bpf/shared_hooks.bpf.c): a close from a state that
 * would have made a TIME_WAIT socket, without its timer armed just before. */
static __always_inline void tw_set_state(struct sock *sk, int oldstate, int newstate)
{
	struct conn_snapshot c = {};
	struct tw_armed *a;
	struct net *net;
	__u32 zero = 0;

	if (newstate != TCP_CLOSE || !(TCPF(oldstate) & TW_CANDIDATES))
		return;
	if (sk->sk_protocol != IPPROTO_TCP || BPF_CORE_READ(sk, sk_err))
		return;
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	a = bpf_map_lookup_elem(&tw_armed, &zero);
	/* The local port from inet_sport: tcp_set_state(CLOSE) has released
	 * the port (inet_num = 0) by the time the tracepoint fires. */
	if (a && a->ts_ns && a->net == (__u64)net &&
	    a->dport == BPF_CORE_READ(sk, __sk_common.skc_dport) &&
	    a->num == bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport)) &&
	    a->daddr == BPF_CORE_READ(sk, __sk_common.skc_daddr) &&
	    bpf_ktime_get_ns() - a->ts_ns < 100000000ULL) {
		a->ts_ns = 0; /* this socket got its TIME_WAIT socket */
		return;
	}
	/* No TIME_WAIT socket: an overflow if the namespace is at its limit
	 * (other closes from these states, an orphan's FIN_WAIT2 timeout or
	 * out-of-memory kill, never make one either). */
	read_tw_limits(net, &c);
	if (c.tw_count < c.max_tw_buckets)
		return;
	tw_overflow(sk, PATH_TRACEPOINT, true, &c);
}

SEC("fexit/inet_twsk_alloc")
int BPF_PROG(fexit_inet_twsk_alloc, struct sock *sk, struct inet_timewait_death_row *dr, int state,
	     struct inet_timewait_sock *ret)
{
	if (!ret)
		tw_overflow(sk, PATH_FENTRY, false, NULL);
	return 0;
}

SEC("kprobe/inet_twsk_alloc")
int BPF_KPROBE(kprobe_inet_twsk_alloc, struct sock *sk)
{
	kprobe_stash(sk);
	return 0;
}

SEC("kretprobe/inet_twsk_alloc")
int BPF_KRETPROBE(kretprobe_inet_twsk_alloc, void *ret)
{
	struct sock *sk = kprobe_unstash();

	if (sk && !ret)
		tw_overflow(sk, PATH_KPROBE, false, NULL);
	return 0;
}

/* ---- paws_reject ----------------------------------------------------- */

/* The drop reasons of timestamp checks, by name: each exists only from the
 * version that added it, and enum values shift between versions. */
static __always_inline bool paws_reason(__u32 reason)
{
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_PAWS) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_PAWS))
		return true;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_TW_PAWS) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_TW_PAWS))
		return true;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_PAWS_ACK) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_PAWS_ACK))
		return true;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_TSECR) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_RFC7323_TSECR))
		return true;
	return false;
}

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_TIMESTAMP 8

/* The segment's addresses (local = its destination), flags and TSval/TSecr,
 * from its headers: the receive path keeps the network and transport
 * header offsets. */
static __always_inline bool read_segment(struct sk_buff *skb, struct conn_snapshot *c)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	unsigned char *opts;
	struct tcphdr t;
	__u8 ver = 0;
	int len, i;

	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return false;
	ver >>= 4;
	if (ver == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		c->family = AF_INET;
		__builtin_memcpy(c->saddr, &ip.daddr, 4);
		__builtin_memcpy(c->daddr, &ip.saddr, 4);
	} else if (ver == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		c->family = AF_INET6;
		__builtin_memcpy(c->saddr, &ip6.daddr, 16);
		__builtin_memcpy(c->daddr, &ip6.saddr, 16);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&t, sizeof(t), head + th))
		return false;
	c->sport = bpf_ntohs(t.dest);
	c->dport = bpf_ntohs(t.source);
	c->seq = bpf_ntohl(t.seq);
	c->tcp_flags = ((__u8 *)&t)[13];
	len = t.doff * 4 - (int)sizeof(t);
	if (len <= 0 || len > 40)
		return true;
	opts = head + th + sizeof(t);
	/* Bounded for the verifier: at most 40 bytes of options. Each byte is
	 * read from the packet, not indexed in a stack copy: the verifier
	 * cannot follow a variable index into the stack. Only a PAWS drop
	 * gets here. */
	for (i = 0; i < 40 && i < len;) {
		__u8 kind = 0, olen = 0;

		if (bpf_probe_read_kernel(&kind, 1, opts + i))
			break;
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			i++;
			continue;
		}
		if (bpf_probe_read_kernel(&olen, 1, opts + i + 1) || olen < 2)
			break;
		if (kind == TCPOPT_TIMESTAMP) {
			__u32 ts[2];

			if (olen != 10 || i + 10 > len || bpf_probe_read_kernel(ts, sizeof(ts), opts + i + 2))
				break;
			c->tsval = bpf_ntohl(ts[0]);
			c->tsecr = bpf_ntohl(ts[1]);
			c->ts_seen = 1;
			break;
		}
		i += olen;
	}
	return true;
}

/* The timestamp the refusing socket holds for its peer. */
static __always_inline void read_ts_recent(struct sock *sk, struct conn_snapshot *c)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);

	if (state == TCP_TIME_WAIT) {
		struct tcp_timewait_sock *tw = (void *)sk;

		c->ts_recent = BPF_CORE_READ(tw, tw_ts_recent);
		c->ts_recent_known = 1;
	} else if (state != TCP_NEW_SYN_RECV && state != TCP_LISTEN) {
		struct tcp_sock *tp = (void *)sk;

		c->ts_recent = BPF_CORE_READ(tp, rx_opt.ts_recent);
		c->ts_recent_known = 1;
	}
}

static __always_inline void on_paws(struct sk_buff *skb, __u32 reason, struct sock *rx_sk, __u8 path)
{
	struct conn_snapshot c = {};
	struct agg_key key = { .type = EVENT_PAWS_REJECT };
	SCRATCH_EVENT(t);
	struct sock *owner_sk;
	struct net *net;

	if (!read_segment(skb, &c))
		return;
	if (cfg_family && c.family != cfg_family)
		return;
	if (cfg_port && c.sport != cfg_port && c.dport != cfg_port)
		return;
	c.drop_reason = reason;
	if (rx_sk) {
		c.sk = (__u64)rx_sk;
		c.state = BPF_CORE_READ(rx_sk, __sk_common.skc_state);
		net = BPF_CORE_READ(rx_sk, __sk_common.skc_net.net);
		c.netns = BPF_CORE_READ(net, ns.inum);
		read_ts_recent(rx_sk, &c);
	} else {
		net = skb_net(skb);
		if (net)
			c.netns = BPF_CORE_READ(net, ns.inum);
	}
	/* tcp_rfc1337 decides what the refused client's reset does to a
	 * TIME_WAIT socket (tcp_timewait_state_process()): 0 kills it, so the
	 * client's next SYN gets through; 1 ignores it. int before 6.1's
	 * sysctl conversions, u8 since: the probed read takes either. */
	if (net) {
		struct netns_ipv4 *ipv4 = net_ipv4(net);

		c.rfc1337 = BPF_CORE_READ_BITFIELD_PROBED(ipv4, sysctl_tcp_rfc1337);
		c.rfc1337_known = 1;
	}
	/* A full socket is its owner's; a TIME_WAIT or request socket has
	 * none left, and the process a SYN was for is the listener's. */
	owner_sk = rx_sk;
	if (!rx_sk || c.state == TCP_TIME_WAIT || c.state == TCP_NEW_SYN_RECV)
		owner_sk = find_listener_for(c.netns, c.family, c.saddr, c.sport);
	if (cfg_filter_pid && (!owner_sk || !owner_wanted(owner_sk)))
		return;
	key.sk = c.sk ? c.sk : ((__u64)c.netns << 32 | (__u32)c.sport << 16 | c.dport);
	__builtin_memcpy(key.addr, c.daddr, sizeof(key.addr));
	if (agg_hit(&key, 0))
		return;
	t = agg_template(EVENT_PAWS_REJECT);
	if (!t)
		return;
	t->ev.path = path;
	__builtin_memcpy(&t->ev.c, &c, sizeof(c));
	if (owner_sk)
		t->ev.c.owner_known = fill_owner(&t->ev, owner_sk);
	agg_commit(&key, t, 0);
}

/* 6.11+: the socket that refused the segment is passed (may be NULL).
 * kfree_skb runs for every dropped packet: one or two compares and out. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_paws_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	if (!paws_reason(reason))
		return 0;
	on_paws(skb, reason, rx_sk, PATH_TRACEPOINT);
	return 0;
}

/* 5.19 - 6.10: no socket; addresses from the headers. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_paws_kfree_skb_nosk, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	if (!paws_reason(reason))
		return 0;
	on_paws(skb, reason, NULL, PATH_TRACEPOINT);
	return 0;
}

/*
 * Before 6.16 a segment refused by PAWS in TIME_WAIT is freed with no drop
 * reason (only PAWSEstab moves), so the fentry and kprobe paths apply the
 * kernel's own test at the entry of tcp_timewait_state_process()
 * (net/ipv4/tcp_minisocks.c, the same in 5.10 to 6.15): a timestamp on the
 * segment, one recorded by the TIME_WAIT socket (tw_ts_recent_stamp != 0),
 * and tcp_paws_reject() with a window of 0: the segment's TSval is older
 * than tw_ts_recent, which is non-zero and less than 24 days old; a reset
 * passes once the recorded one is 60 s (TCP_PAWS_MSL) old. Only the
 * TIME_WAIT substate counts it (PAWSEstab); FIN_WAIT2 just ACKs.
 */
#define TCP_PAWS_24DAYS (60 * 60 * 24 * 24)
#define TCP_PAWS_MSL 60
#define PAWS_RECOMPUTED 0xffffffff /* drop_reason: tcptrace applied the test */

static __always_inline void on_timewait_segment(struct sock *sk, struct sk_buff *skb, __u8 path)
{
	struct tcp_timewait_sock *tcptw = (void *)sk;
	struct conn_snapshot c = {};
	__u32 recent, now_s;
	int stamp;

	if (BPF_CORE_READ((struct inet_timewait_sock *)sk, tw_substate) != TCP_TIME_WAIT)
		return;
	stamp = BPF_CORE_READ_BITFIELD_PROBED(tcptw, tw_ts_recent_stamp);
	if (!stamp || !read_segment(skb, &c) || !c.ts_seen)
		return;
	recent = BPF_CORE_READ(tcptw, tw_ts_recent);
	now_s = bpf_ktime_get_ns() / 1000000000ULL; /* ktime_get_seconds() */
	if ((__s32)(recent - c.tsval) <= 0 || !recent || (__s32)(now_s - (stamp + TCP_PAWS_24DAYS)) >= 0)
		return;
	if ((c.tcp_flags & 0x04) && (__s32)(now_s - (stamp + TCP_PAWS_MSL)) >= 0)
		return; /* an old enough reset passes */
	on_paws(skb, PAWS_RECOMPUTED, sk, path);
}

SEC("fentry/tcp_timewait_state_process")
int BPF_PROG(fentry_tcp_timewait_state_process, struct inet_timewait_sock *tw, struct sk_buff *skb)
{
	on_timewait_segment((struct sock *)tw, skb, PATH_FENTRY);
	return 0;
}

SEC("kprobe/tcp_timewait_state_process")
int BPF_KPROBE(kprobe_tcp_timewait_state_process, struct inet_timewait_sock *tw, struct sk_buff *skb)
{
	on_timewait_segment((struct sock *)tw, skb, PATH_KPROBE);
	return 0;
}

/* ---- reset ----------------------------------------------------------- */

/* One line per peer address, side and interval: a storm of aborted
 * connections (a crashing peer, SO_LINGER 0 clients) must not flood the
 * output; the line names the latest connection and the count. */
static __always_inline void on_reset(struct sock *sk, __u8 side, __u32 rst_reason, bool reason_known)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct agg_key key = { .type = EVENT_RESET };
	SCRATCH_EVENT(t);
	__u32 states = RST_STATES;
	bool in_close;
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
	if (!conn_sock_wanted(sk) || !sock_owner_wanted(sk, in_close))
		return;
	key.sk = (__u64)BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) << 32 | side;
	key_peer(&key, sk);
	if (agg_hit(&key, 0))
		return;
	t = agg_template(EVENT_RESET);
	if (!t)
		return;
	t->ev.path = PATH_TRACEPOINT;
	read_conn(sk, &t->ev.c);
	t->ev.c.side = side;
	t->ev.c.rst_reason = rst_reason;
	t->ev.c.rst_reason_known = reason_known;
	t->ev.c.unacked = BPF_CORE_READ(tp, snd_nxt) - BPF_CORE_READ(tp, snd_una);
	t->ev.c.unread = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	t->ev.c.owner_known = fill_sock_owner(&t->ev, sk, in_close);
	agg_commit(&key, t, 0);
}

/* Up to 6.9: only full sockets; the reason did not exist. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_tcp_send_reset, struct sock *sk, struct sk_buff *skb)
{
	on_reset(sk, RST_SENT, 0, false);
	return 0;
}

/* 6.10+: every reset, sk NULL when no socket owns the segment. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tp_tcp_send_reset_reason, struct sock *sk, struct sk_buff *skb, int reason)
{
	on_reset(sk, RST_SENT, reason, true);
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_tcp_receive_reset, struct sock *sk)
{
	on_reset(sk, RST_RECEIVED, 0, false);
	return 0;
}

#endif /* CONNECT_BPF_C */
