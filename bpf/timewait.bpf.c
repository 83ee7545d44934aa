/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector timewait: timewait_overflow.
 *
 * tcp_time_wait() asks inet_twsk_alloc() for a TIME_WAIT socket, which
 * refuses when the namespace already holds tcp_max_tw_buckets of them; the
 * socket is then closed at once (TCPTimeWaitOverflow) instead of being
 * replaced by a TIME_WAIT socket. Either way tcp_done() moves it from
 * FIN_WAIT1/FIN_WAIT2/CLOSING to CLOSE. When the TIME_WAIT socket was made,
 * its timer was armed just before, on this CPU (inet_twsk_schedule():
 * timer:timer_start with tw_timer_handler); so a close from those states
 * with no such timer for the same ports, while the namespace is at its
 * limit, is an overflow. fentry/kprobe: inet_twsk_alloc() returning NULL.
 */
#include "common.bpf.h"
#include "conn.bpf.h"

#define TW_CANDIDATES (TCPF(TCP_FIN_WAIT1) | TCPF(TCP_FIN_WAIT2) | TCPF(TCP_CLOSING))

/* tw_timer_handler's address (/proc/kallsyms): the TIME_WAIT timer. */
const volatile __u64 cfg_tw_timer_handler = 0;

/* The TIME_WAIT socket whose timer this CPU armed last. */
struct tw_armed {
	__u64 ts_ns;
	__u64 net;
	__u32 daddr;
	__u16 dport; /* network order */
	__u16 num;   /* local port */
};

DEFINE_MAP(tw_armed, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct tw_armed, 1);

/* One line per namespace and interval. */
static __always_inline void tw_overflow(struct sock *sk, __u8 path, bool limits_read, struct conn_snapshot *given)
{
	struct agg_key key = { .type = EVENT_TIMEWAIT_OVERFLOW };
	SCRATCH_EVENT(t);
	struct net *net;

	if (!conn_sock_wanted(sk) || !conn_owner_wanted(sk, path))
		return;
	key.sk = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	t = agg_first(&key, EVENT_TIMEWAIT_OVERFLOW, path);
	if (!t)
		return;
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

/* Armings recorded while the namespace holds at least its limit less this
 * many: the close that follows an arming on this CPU may see the count
 * moved by TIME_WAIT sockets other CPUs made in between, a handful at
 * most. */
#define TW_NEAR_LIMIT 64

/* timer_start (tcptrace.bpf.c) for the TIME_WAIT timer (tw_timer_handler):
 * armed for every new TIME_WAIT socket, and again by every segment that
 * reaches one. Only a close that finds its namespace at its limit asks
 * whether its timer was armed (a count below the limit means the socket was
 * made), so an arming far from the limit is left after reading the count:
 * under churn nearly every one. */
static __shared_hook void tw_timer_start(struct timer_list *timer)
{
	struct inet_timewait_death_row *dr;
	struct inet_timewait_sock *tw;
	struct tw_armed *a;
	__u32 zero = 0;

	tw = (void *)timer - bpf_core_field_offset(struct inet_timewait_sock, tw_timer);
	dr = BPF_CORE_READ(tw, __tw_common.skc_tw_dr);
	if (!dr || tw_held(dr) + TW_NEAR_LIMIT < BPF_CORE_READ(dr, sysctl_max_tw_buckets))
		return;
	a = bpf_map_lookup_elem(&tw_armed, &zero);
	if (!a)
		return;
	a->ts_ns = bpf_ktime_get_ns();
	a->net = (__u64)BPF_CORE_READ(tw, __tw_common.skc_net.net);
	a->dport = BPF_CORE_READ(tw, __tw_common.skc_dport);
	a->num = BPF_CORE_READ(tw, __tw_common.skc_num);
	a->daddr = BPF_CORE_READ(tw, __tw_common.skc_daddr);
}

/* A close from a state that would have made a TIME_WAIT socket (below). Its
 * own function, so that the snapshot is not zeroed on every state change of
 * the host: clang zeroes a struct where it is declared. */
static __always_inline void tw_close(struct sock *sk)
{
	struct conn_snapshot c = {};
	struct tw_armed *a;
	struct net *net;
	__u32 zero = 0;

	/* Below the limit the TIME_WAIT socket was made (or the close was
	 * one that never makes one): the common case leaves here. */
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	read_tw_limits(net, &c);
	if (c.tw_count < c.max_tw_buckets)
		return;
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
	tw_overflow(sk, PATH_TRACEPOINT, true, &c);
}

/* inet_sock_set_state (tcptrace.bpf.c): a close from a state that would
 * have made a TIME_WAIT socket, without its timer armed just before. */
static __shared_hook void tw_set_state(struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_CLOSE || !(TCPF(oldstate) & TW_CANDIDATES))
		return;
	if (sk->sk_protocol != IPPROTO_TCP || BPF_CORE_READ(sk, sk_err))
		return;
	tw_close(sk);
}

/* fexit_inet_twsk_alloc, kprobe_inet_twsk_alloc, kretprobe_inet_twsk_alloc */
SOCK_RETURN_PROGS(inet_twsk_alloc, struct inet_timewait_sock *ret, if (!ret) tw_overflow(sk, path, false, NULL),
		  struct sock *sk, struct inet_timewait_death_row *dr, int state)
