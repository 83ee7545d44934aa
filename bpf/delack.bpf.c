/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector delack: delayed_ack, a delayed-ACK timer that fired and sent the
 * ACK it held.
 *
 * A receiver that has nothing to send back does not ACK every segment:
 * __tcp_ack_snd_check() calls tcp_send_delayed_ack(), which arms
 * icsk_delack_timer (a timer_list in every version) for ato jiffies (at
 * least TCP_ATO_MIN = HZ/25 = 40 ms; bounded by the RTT and by
 * icsk_delack_max). When it fires, tcp_delack_timer() runs
 * tcp_delack_timer_handler() unless the application holds the socket
 * (then DelayedACKLocked, and tcp_release_cb() runs the handler later);
 * the handler sends the ACK and counts LINUX_MIB_DELAYEDACKS only if an ACK
 * is still scheduled: one sent meanwhile with data, or a timer 6.18 finds
 * idle (early exit), sends nothing. So "fired and sent" is decided the way
 * the kernel counts it: this CPU's DelayedACKs counter before and after the
 * handler (mib.bpf.h). tcptrace's count then equals the kernel's.
 *
 * Paths:
 *   tracepoint  timer:timer_start, timer:timer_expire_entry/_exit (tp_btf),
 *               every kernel timer: the delayed-ACK one is recognised by
 *               its callback, tcp_delack_timer (address from kallsyms), in
 *               one load and one compare. A handler deferred to
 *               tcp_release_cb() is not seen on this path.
 *   fentry      fentry/tcp_send_delayed_ack, fentry+fexit/tcp_delack_timer_handler
 *   kprobe      the same with kprobes
 */
#include "common.bpf.h"
#include "owners.bpf.h"
#include "mib.bpf.h"
#include "delack.bpf.h"

#define ICSK_ACK_TIMER 2

/* Set by user space from /proc/kallsyms and BTF. */
const volatile __u64 cfg_delack_fn = 0;    /* address of tcp_delack_timer() */
const volatile __u32 mib_delayed_acks = 0; /* LINUX_MIB_DELAYEDACKS */
/* Which of the detector's results the run wants. */
const volatile __u8 cfg_emit_delack = 1;   /* delayed_ack events */
const volatile __u8 cfg_record_peer = 0;   /* firings for nagle_delack_stall (delack_recent) */

/*
 * When each socket's delayed ACK was (re)armed, for the time it was held:
 * one slot per socket address, direct-mapped. Every arming of every
 * connection writes here, and a hash table's insert for each connection new
 * to it (an LRU's allocation and list locks) was most of what a connection's
 * arming cost under churn; an array's slot is found without a helper call
 * and written in place. Two sockets whose delayed ACKs are pending at once
 * in one slot are rare (an ACK is held for tens of milliseconds): the later
 * arming takes the slot, and the earlier's firing finds another socket
 * there and reports its held time as unknown, as for an arming before
 * tcptrace started. check is sk ^ armed_ns, written last: a slot written by
 * two CPUs at once, or read while written, fails it and is not believed.
 */
#define DELACK_SLOTS 65536

struct delack_slot {
	__u64 sk;
	__u64 armed_ns;
	__u64 check;
};

DEFINE_MAP(delack_armed, BPF_MAP_TYPE_ARRAY, __u32, struct delack_slot, DELACK_SLOTS);

/* One firing in progress on this CPU: the state before the handler. The
 * handler runs with bottom halves off (timer softirq, or tcp_release_cb()
 * under the socket's spinlock), so nothing else runs here in between. */
struct delack_firing {
	__u64 timer;   /* the timer_list, 0 when the slot is free */
	__u64 sk;
	__u64 held_ns;
	__u64 acks;    /* this CPU's DelayedACKs before the handler */
	__u64 entry_ns; /* when the handler was entered */
	__u32 ato;
	__u32 unacked;
	__u32 rcv_mss;
	__u8 pingpong;
	__u8 quick;
	__u8 pending;
	__u8 counted;  /* the counter could be read */
	__u64 addr;    /* scratch for addr_num() */
};

DEFINE_MAP(delack_firings, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct delack_firing, 1);

static __always_inline struct delack_firing *firing_slot(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&delack_firings, &zero);
}

static __always_inline struct delack_slot *armed_slot(__u64 addr)
{
	/* Fibonacci hashing: socket addresses are slab objects a few KB
	 * apart, their low bits alike. */
	__u32 idx = (addr * 0x9E3779B97F4A7C15ULL) >> 48;

	return bpf_map_lookup_elem(&delack_armed, &idx);
}

/* A socket's address as a number (addr_via()); f is this CPU's firing
 * slot. */
static __always_inline __u64 addr_num(struct delack_firing *f, __u64 sk)
{
	return addr_via(&f->addr, sk);
}

static __always_inline void mark_armed(struct delack_firing *f, __u64 sk)
{
	__u64 addr = addr_num(f, sk), now = bpf_ktime_get_ns();
	struct delack_slot *s = armed_slot(addr);

	if (!s)
		return;
	s->sk = addr;
	s->armed_ns = now;
	s->check = addr ^ now;
}

/* When sk's delayed ACK was armed, 0 if its slot does not say. */
static __always_inline __u64 armed_at(struct delack_firing *f, __u64 sk)
{
	__u64 addr = addr_num(f, sk), at;
	struct delack_slot *s = armed_slot(addr);

	if (!s || s->sk != addr)
		return 0;
	at = s->armed_ns;
	return s->check == (addr ^ at) ? at : 0;
}

static __always_inline bool read_delayed_acks(struct sock *sk, __u64 *v)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	__u64 base;

	if (!this_cpu_mibs(net, sk, &base))
		return false;
	*v = mib_read(base, mib_delayed_acks);
	return true;
}

/* The ACK was delayed from now on (fentry/kprobe: tcp_send_delayed_ack());
 * an already armed timer keeps its earlier deadline, and its start. */
static __always_inline void delack_arm(struct sock *sk)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct delack_firing *f;

	if (BPF_CORE_READ(icsk, icsk_ack.pending) & ICSK_ACK_TIMER)
		return;
	f = firing_slot();
	if (f)
		mark_armed(f, (__u64)sk);
}

/* Before the handler: what made the ACK wait. */
static __always_inline void delack_enter(struct sock *sk, __u64 timer)
{
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct delack_firing *f = firing_slot();
	__u64 key = (__u64)sk, armed;
	__u8 pending;

	if (!f)
		return;
	/* The handler sends a delayed ACK only if one is still pending: most
	 * firings on a request/response connection find it went out with
	 * data, and leave here after one read. */
	pending = BPF_CORE_READ(icsk, icsk_ack.pending);
	if (!(pending & ICSK_ACK_TIMER))
		return;
	f->timer = timer;
	f->sk = key;
	f->held_ns = 0;
	f->entry_ns = bpf_ktime_get_ns();
	/* Kept after the firing: the next delay re-arms the timer (a new
	 * time), and a handler that finds the deadline ahead re-arms it
	 * without a new delay (tp_timer_start leaves the time as it is). */
	armed = armed_at(f, key);
	if (armed)
		f->held_ns = bpf_ktime_get_ns() - armed;
	/* ato became the bitfield ato:8 in 6.8's cache-line reorganisation;
	 * the PROBED bitfield read relocates both layouts. */
	f->ato = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ack.ato);
	f->pingpong = BPF_CORE_READ(icsk, icsk_ack.pingpong);
	f->quick = BPF_CORE_READ(icsk, icsk_ack.quick);
	f->pending = pending;
	f->rcv_mss = BPF_CORE_READ(icsk, icsk_ack.rcv_mss);
	/* rcv_wup is rcv_nxt as of the last window we announced, i.e. the
	 * last ACK sent: the difference is what this ACK acknowledges. */
	f->unacked = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, rcv_wup);
	f->counted = read_delayed_acks(sk, &f->acks);
}

/* The connection's addresses, as read_snapshot() lays them out. */
static __always_inline void read_tuple(struct sock *sk, struct conn_tuple *t)
{
	struct tcp_snapshot s;

	s.family = read_addrs(sk, &s.saddr, &s.daddr, &s.sport, &s.dport);
	conn_tuple_of(&s, t, false);
}

/* This firing, for a Nagle stall its ACK may release on the peer's side. */
static __always_inline void record_peer(struct sock *sk, struct delack_firing *f, bool interactive)
{
	struct conn_tuple ct;
	struct peer_delack p = {
		.fired_ns = bpf_ktime_get_ns(),
		.held_ns = f->held_ns,
		.ato = f->ato,
		.in_pingpong = interactive,
	};
	struct owner o;

	if (table_owner(sk, &o)) {
		p.pid = o.tgid;
		p.owner_known = 1;
		__builtin_memcpy(p.comm, o.comm, sizeof(p.comm));
	}
	read_tuple(sk, &ct);
	bpf_map_update_elem(&delack_recent, &ct, &p, BPF_ANY);
}

/* After the handler: if it sent the ACK, report it. */
static __always_inline void delack_exit(__u64 timer, __u8 path)
{
	struct delack_firing *f = firing_slot();
	struct inet_connection_sock *icsk;
	struct agg_key key = { .type = EVENT_DELAYED_ACK };
	SCRATCH_EVENT(t);
	struct sock *sk;
	__u64 acks = 0;
	__u8 pp_after;
	bool wanted;

	if (!f || !f->timer || f->timer != timer)
		return;
	f->timer = 0;
	sk = (struct sock *)f->sk;
	if (!f->counted || !read_delayed_acks(sk, &acks) || acks == f->acks)
		return; /* nothing sent (or not provably): not a delayed ACK */
	icsk = (struct inet_connection_sock *)sk;
	/* In interactive (pingpong) mode the handler leaves that mode; else it
	 * inflates ato. Which one it did is the kernel's own verdict, whatever
	 * the version's threshold (TCP_PINGPONG_THRESH 3 in 5.10, 1 later,
	 * sysctl tcp_pingpong_thresh from 6.8). */
	pp_after = BPF_CORE_READ(icsk, icsk_ack.pingpong);

	wanted = cfg_emit_delack && sock_wanted(sk) && owner_wanted(sk);
	if (cfg_record_peer)
		record_peer(sk, f, f->pingpong && !pp_after);
	if (!wanted)
		return;
	key.sk = (__u64)sk;
	/* A firing whose arming was not seen has a line of its own: summed
	 * with the others it would count in the line's average as held 0. */
	key.sub = !f->held_ns;
	if (agg_hit(&key, f->held_ns))
		return;
	t = agg_template(EVENT_DELAYED_ACK);
	if (!t)
		return;
	t->ev.path = path;
	read_snapshot(sk, &t->ev.s);
	t->ev.a.owner_known = fill_owner(&t->ev, sk);
	t->ev.a.held_ns = f->held_ns;
	t->ev.a.ato = f->ato;
	t->ev.a.pingpong = f->pingpong;
	t->ev.a.in_pingpong = f->pingpong && !pp_after;
	t->ev.a.quick = f->quick;
	t->ev.a.pending = f->pending;
	t->ev.a.unacked_bytes = f->unacked;
	t->ev.a.rcv_mss = f->rcv_mss;
	agg_commit(&key, t, f->held_ns);
}

static __always_inline struct sock *delack_timer_sock(struct timer_list *timer)
{
	return (struct sock *)((__u64)timer - bpf_core_field_offset(struct inet_connection_sock, icsk_delack_timer));
}

/*
 * The three timer tracepoints run for every timer_list of the kernel: each
 * leaves after one load (the callback, a direct read of the trusted
 * argument) and one compare unless the timer is a delayed-ACK timer
 * (timer_start's program is shared, in tcptrace.bpf.c, and calls the
 * function below).
 *
 * timer_start fires when the timer is queued, not
 * when mod_timer() finds it already pending at that deadline, so it marks
 * the arming of a delayed ACK. A re-arm from inside the handler (the
 * deadline moved: icsk_ack.timeout or, 6.15+, the timer's own expires, is
 * still ahead) continues the same wait and keeps its start.
 */
static __shared_hook void delack_timer_start(struct timer_list *timer)
{
	struct delack_firing *f;

	f = firing_slot();
	/* A re-arm from inside the handler comes right after its entry. An
	 * older slot is one whose exit was never seen: a lost exit must not
	 * make every later arming look like a re-arm. */
	if (!f || (f->timer == (__u64)timer && bpf_ktime_get_ns() - f->entry_ns < 5000000ULL))
		return;
	mark_armed(f, (__u64)delack_timer_sock(timer));
}

SEC("tp_btf/timer_expire_entry")
int BPF_PROG(tp_timer_expire_entry, struct timer_list *timer)
{
	if ((__u64)timer->function != cfg_delack_fn)
		return 0;
	delack_enter(delack_timer_sock(timer), (__u64)timer);
	return 0;
}

/* After the callback the timer's memory may have been freed with its socket
 * (sock_put() at the end of tcp_delack_timer()): the load of ->function is
 * a fault-safe BTF load, and only a timer whose entry this CPU recorded is
 * looked at further. */
SEC("tp_btf/timer_expire_exit")
int BPF_PROG(tp_timer_expire_exit, struct timer_list *timer)
{
	if ((__u64)timer->function != cfg_delack_fn)
		return 0;
	delack_exit((__u64)timer, PATH_TRACEPOINT);
	return 0;
}

/* fentry/kprobe: the handler itself, which also covers the firings that
 * tcp_release_cb() ran after the application released the socket. */
/* fentry_tcp_send_delayed_ack, kprobe_tcp_send_delayed_ack */
ENTRY_PROGS(tcp_send_delayed_ack, delack_arm(sk), struct sock *sk)
/* fentry_tcp_delack_timer_handler, kprobe_tcp_delack_timer_handler */
ENTRY_PROGS(tcp_delack_timer_handler, delack_enter(sk, (__u64)sk), struct sock *sk)

SEC("fexit/tcp_delack_timer_handler")
int BPF_PROG(fexit_tcp_delack_timer_handler, struct sock *sk)
{
	delack_exit((__u64)sk, PATH_FENTRY);
	return 0;
}

/* kretprobes see no arguments: the slot's own key stands for the call. */
SEC("kretprobe/tcp_delack_timer_handler")
int BPF_KRETPROBE(kretprobe_tcp_delack_timer_handler)
{
	struct delack_firing *f = firing_slot();

	if (f && f->timer)
		delack_exit(f->timer, PATH_KPROBE);
	return 0;
}
