/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by every detector: configuration, maps, filters, the socket snapshot
 * and the aggregation that keeps a spinning sender from flooding the output.
 */
#ifndef COMMON_BPF_H
#define COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "tcptrace.h"
#include "macros.bpf.h"

/* Which detectors the shared programs work for (enum shared_hook), written
 * by the loader once the programs are attached: a program on a hook that
 * several detectors need is loaded and attached once (tcptrace.bpf.c). */
__u32 hooks_on = 0;

/* A detector's handler for one of those hooks, called by the shared program
 * (tcptrace.bpf.c). The detector's file compiled alone has no caller for it,
 * which is expected: `unused` keeps -Wall quiet there. */
#define __shared_hook __always_inline __attribute__((unused))

#define AF_INET 2
#define AF_INET6 10
#define EEXIST 17
#define EAGAIN 11
#define SOCK_STREAM 1
#define SOCK_SNDBUF_LOCK 1
#define TCP_FLAG_ACK 0x10 /* th->ack, the 14th byte of the TCP header */

/* Set by user space before load; constant to the verifier, so a disabled
 * filter costs nothing. */
const volatile __u8 cfg_filter_pid = 0;   /* only tgids in pid_filter */
const volatile __u8 cfg_filter_cgroup = 0; /* only cgroups in cgroup_filter */
const volatile __u16 cfg_port = 0;        /* local or remote port, 0 = any */
const volatile __u16 cfg_family = 0;      /* AF_INET, AF_INET6, 0 = both */
const volatile __u64 cfg_snapshot_ns = 50000000; /* refresh an aggregate's snapshot at most this often */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* tgids to trace when --pid is given; threads are covered by their tgid. */
DEFINE_MAP(pid_filter, BPF_MAP_TYPE_HASH, __u32, __u8, 1024);

/* cgroup (v2) ids to trace when --cgroup or --container is given: the
 * cgroup and its descendants, kept up to date by user space. */
DEFINE_MAP(cgroup_filter, BPF_MAP_TYPE_HASH, __u64, __u8, 4096);

DEFINE_MAP(aggregates, BPF_MAP_TYPE_HASH, struct agg_key, struct agg_value, 16384);

/* Records that did not reach user space, per event type: the ring buffer
 * was full, or the aggregation table was. Reported at exit, never hidden. */
DEFINE_COUNTERS(lost, EVENT_TYPE_MAX);

/*
 * Scratch space to build an event in: struct event is too large for the
 * 512-byte BPF stack. One slot per level of nesting on a CPU. A tracing
 * program runs with preemption off but interrupts on, and a hard interrupt
 * that ends while a program in process context (a send) is building its
 * event runs the pending softirqs right there (irq_exit: in_interrupt() does
 * not count preemption): a timer or a received segment then runs another of
 * these programs on the same CPU, and a hard interrupt can do the same to a
 * softirq. With a single slot the interrupted program would go on with, and
 * report, the other program's event. The levels nest strictly (the inner
 * program finishes before the outer resumes), so a depth count picks the
 * slot; four covers task, softirq, hard interrupt and one more.
 */
#define SCRATCH_LEVELS 4

struct scratch_stack {
	__u32 depth;
	__u32 pad;
	struct agg_value slot[SCRATCH_LEVELS];
};

DEFINE_MAP(scratch, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct scratch_stack, 1);

/* Is there a filter on who (--pid, --cgroup, --container)? */
static __always_inline bool who_filtered(void)
{
	return cfg_filter_pid || cfg_filter_cgroup;
}

/* A process (tgid) in a cgroup: is it wanted? */
static __always_inline bool who_wanted(__u32 tgid, __u64 cgroup)
{
	if (cfg_filter_pid && !bpf_map_lookup_elem(&pid_filter, &tgid))
		return false;
	return !cfg_filter_cgroup || bpf_map_lookup_elem(&cgroup_filter, &cgroup);
}

/* The calling task (tgid): is it wanted? Its cgroup is read only when a
 * cgroup filter asks for it. */
static __always_inline bool current_wanted(__u32 tgid)
{
	return who_wanted(tgid, cfg_filter_cgroup ? bpf_get_current_cgroup_id() : 0);
}

static __always_inline bool is_tcp(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP &&
	       BPF_CORE_READ(sk, sk_type) == SOCK_STREAM;
}

/* The --port and -4/-6 filters, applied before any snapshot is taken. */
static __always_inline bool sock_wanted(struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (cfg_family && family != cfg_family)
		return false;
	if (cfg_port) {
		__u16 sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (sport != cfg_port && dport != cfg_port)
			return false;
	}
	return true;
}

/* A socket's family, addresses and ports, from struct sock_common, so that
 * a TIME_WAIT or request socket reads like a full one. IPv4 addresses go in
 * the first 4 bytes of the 16; the ports in host order. */
static __always_inline __u16 read_addrs(struct sock *sk, __u8 (*saddr)[16], __u8 (*daddr)[16], __u16 *sport, __u16 *dport)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
	}
	return family;
}

/* The namespace a received skb belongs to. skb->dev may be gone by the time
 * TCP is done with a segment (a consumed SYN has none); the input route
 * (skb->_skb_refdst, low bit a no-reference flag) still names the receiving
 * device. */
static __always_inline struct net *skb_net(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct dst_entry *dst;

	if (!dev) {
		dst = (struct dst_entry *)(BPF_CORE_READ(skb, _skb_refdst) & ~1UL);
		if (!dst)
			return NULL;
		dev = BPF_CORE_READ(dst, dev);
		if (!dev)
			return NULL;
	}
	return BPF_CORE_READ(dev, nd_net.net);
}

/* skb_net() for an skb the kernel passed a tp_btf program: the device and
 * its namespace by direct loads (a probe read each otherwise, on every SYN
 * of the host). */
static __always_inline struct net *skb_net_trusted(struct sk_buff *skb)
{
	struct net_device *dev = skb->dev;

	if (!dev)
		return skb_net(skb);
	return dev->nd_net.net;
}

/*
 * Every read goes through BPF_CORE_READ: struct tcp_sock was reorganised into
 * cache-line groups in 6.8 and fields moved in struct sock in 6.x, and a
 * tp_btf program may not dereference past struct sock directly.
 */
static __always_inline void read_snapshot(struct sock *sk, struct tcp_snapshot *s)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct proto *prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	unsigned long *pressure;
	atomic_long_t *allocated;

	s->sk = (__u64)sk;
	s->now_jiffies = bpf_jiffies64();
	s->family = read_addrs(sk, &s->saddr, &s->daddr, &s->sport, &s->dport);
	s->state = BPF_CORE_READ(sk, __sk_common.skc_state);
	s->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	s->ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);

	/* sk_userlocks is a 4-bit bitfield up to 6.x and a plain u8 later:
	 * the PROBED bitfield read relocates both. */
	s->userlocks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	s->sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	s->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);

	s->write_seq = BPF_CORE_READ(tp, write_seq);
	s->snd_nxt = BPF_CORE_READ(tp, snd_nxt);
	s->snd_una = BPF_CORE_READ(tp, snd_una);
	s->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	/* The field kept its name when the tcp_snd_cwnd() accessor came (5.18). */
	s->snd_cwnd = BPF_CORE_READ(tp, snd_cwnd);
	s->mss_cache = BPF_CORE_READ(tp, mss_cache);
	s->packets_out = BPF_CORE_READ(tp, packets_out);
	s->retrans_out = BPF_CORE_READ(tp, retrans_out);
	s->lost_out = BPF_CORE_READ(tp, lost_out);
	s->sacked_out = BPF_CORE_READ(tp, sacked_out);
	s->srtt_us = BPF_CORE_READ(tp, srtt_us);
	s->rcv_tstamp = BPF_CORE_READ(tp, rcv_tstamp);
	s->notsent_lowat = BPF_CORE_READ(tp, notsent_lowat);
	s->total_retrans = BPF_CORE_READ(tp, total_retrans);
	/* nonagle is `u8 nonagle:4` in every version; its neighbours changed in 6.8. */
	s->nonagle = BPF_CORE_READ_BITFIELD_PROBED(tp, nonagle);

	s->retransmits = BPF_CORE_READ(icsk, icsk_retransmits);
	s->backoff = BPF_CORE_READ(icsk, icsk_backoff);
	s->pending = BPF_CORE_READ(icsk, icsk_pending);
	s->probes_out = BPF_CORE_READ(icsk, icsk_probes_out);
	s->rto = BPF_CORE_READ(icsk, icsk_rto);
	s->ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	/* icsk_timeout was removed in 6.15; the timer's own expiry exists in
	 * every version and is what the removed field mirrored. */
	s->timer_expires = BPF_CORE_READ(icsk, icsk_retransmit_timer.expires);
	/* 6.15 made the RTO ceiling settable, per socket and per namespace;
	 * TCP_RTO_MAX is a constant before. Resolved at load: no read. */
	s->rto_max_knobs = (bpf_core_field_exists(icsk->icsk_rto_max) ? RTO_MAX_SOCKOPT : 0) |
			   (bpf_core_field_exists(struct netns_ipv4, sysctl_tcp_rto_max_ms) ? RTO_MAX_SYSCTL : 0);

	/* tcp_memory_pressure and tcp_memory_allocated are globals that TCP
	 * points its struct proto at; reading through the pointers avoids a
	 * ksym and works for every version. */
	pressure = BPF_CORE_READ(prot, memory_pressure);
	if (pressure)
		bpf_probe_read_kernel(&s->mem_pressure, sizeof(s->mem_pressure), pressure);
	allocated = BPF_CORE_READ(prot, memory_allocated);
	if (allocated)
		bpf_probe_read_kernel(&s->mem_allocated, sizeof(s->mem_allocated), &allocated->counter);
}

static __always_inline void fill_task(struct event *e)
{
	__u64 id = bpf_get_current_pid_tgid();

	e->pid = id >> 32;
	e->tid = (__u32)id;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->cgroup = bpf_get_current_cgroup_id();
}

static __always_inline int submit(struct event *src)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		return -1;
	__builtin_memcpy(e, src, sizeof(*e));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

/*
 * Aggregation: the first occurrence of an event on a key (a socket, a
 * destination, a listener) goes out at once through the ring buffer with a
 * full snapshot; later ones only add to the key's entry in `aggregates`
 * (and refresh its snapshot now and then), and user space prints one line
 * per entry whose count grew, once per interval. Two steps, so that the
 * common case reads nothing:
 *
 * agg_hit() counts an occurrence on an existing entry whose snapshot is
 * fresh enough, and says so; the caller is done. Otherwise the caller fills
 * a template event (the scratch slot) and calls agg_commit(), which either
 * refreshes the entry's snapshot or makes the entry and sends the template
 * through the ring buffer as the first line of its kind on that key.
 *
 * The map counts only occurrences that did not go through the ring buffer,
 * so user space never counts one twice whatever the order of the two
 * channels. A record that the full ring buffer refused is counted in the
 * map instead: printed a little later rather than lost (it still shows in
 * the `lost` counter).
 */
/* n: occurrences this call stands for (1 but for retransmit, where it is
 * the segments the kernel counted). */
static __always_inline void agg_add_n(struct agg_value *v, __u64 now, __u64 wait_ns, __u64 n)
{
	v->last_ns = now;
	__sync_fetch_and_add(&v->count, n);
	if (wait_ns) {
		__sync_fetch_and_add(&v->wait_ns, wait_ns);
		if (wait_ns > v->max_wait_ns)
			v->max_wait_ns = wait_ns;
	}
}

static __always_inline void agg_add(struct agg_value *v, __u64 now, __u64 wait_ns)
{
	agg_add_n(v, now, wait_ns, 1);
}

static __always_inline bool agg_hit_n(struct agg_key *key, __u64 wait_ns, __u64 n)
{
	struct agg_value *v = bpf_map_lookup_elem(&aggregates, key);
	__u64 now = bpf_ktime_get_ns();

	if (!v || now - v->snap_ns >= cfg_snapshot_ns)
		return false;
	agg_add_n(v, now, wait_ns, n);
	return true;
}

static __always_inline bool agg_hit(struct agg_key *key, __u64 wait_ns)
{
	return agg_hit_n(key, wait_ns, 1);
}

/* A zeroed scratch slot of this CPU's next level, for an event of `type`
 * (agg_commit()'s template). Hold it in a SCRATCH_EVENT variable, which
 * gives it back on every way out of the scope. No free level (deeper
 * nesting than any hook here has) counts the occurrence as lost. */
static __always_inline struct agg_value *agg_template(__u32 type)
{
	__u32 zero = 0, d;
	struct scratch_stack *s = bpf_map_lookup_elem(&scratch, &zero);
	struct agg_value *t;

	if (!s)
		return NULL;
	d = s->depth;
	if (d >= SCRATCH_LEVELS) {
		counter_inc(&lost, type);
		return NULL;
	}
	s->depth = d + 1;
	t = &s->slot[d];
	__builtin_memset(t, 0, sizeof(*t));
	t->ev.type = type;
	return t;
}

/* agg_template() for an event seen on `path`. */
static __always_inline struct agg_value *agg_template_on(__u32 type, __u8 path)
{
	struct agg_value *t = agg_template(type);

	if (t)
		t->ev.path = path;
	return t;
}

/* The usual start of an aggregated event: a repeat on a key whose entry is
 * fresh is only counted (NULL); a first occurrence gets a zeroed template
 * of `type` from `path`, to fill and give to agg_commit(). Hold the result
 * in a SCRATCH_EVENT variable. */
static __always_inline struct agg_value *agg_first(struct agg_key *key, __u32 type, __u8 path)
{
	if (agg_hit(key, 0))
		return NULL;
	return agg_template_on(type, path);
}

static __always_inline void scratch_put(struct agg_value **t)
{
	__u32 zero = 0;
	struct scratch_stack *s;

	if (!*t)
		return;
	s = bpf_map_lookup_elem(&scratch, &zero);
	if (s && s->depth)
		s->depth--;
}

/* A scratch event owned by the enclosing scope (clang's cleanup attribute
 * runs scratch_put() on every return), so no early return can leak a level. */
#define SCRATCH_EVENT(t) struct agg_value *t __attribute__((cleanup(scratch_put))) = NULL

static __always_inline void agg_commit_n(struct agg_key *key, struct agg_value *t, __u64 wait_ns, __u64 n)
{
	struct agg_value *v = bpf_map_lookup_elem(&aggregates, key);
	__u64 now = bpf_ktime_get_ns();

	t->snap_ns = now;
	t->ev.ts_ns = now;
	t->ev.count = n;
	t->ev.wait_ns = wait_ns;
	t->ev.max_wait_ns = wait_ns;
	if (v) {
		/* Refresh: the entry keeps its counts, takes the new state. */
		agg_add_n(v, now, wait_ns, n);
		v->snap_ns = now;
		__builtin_memcpy(&v->ev, &t->ev, sizeof(v->ev));
		return;
	}
	/* NOEXIST: of two CPUs racing on a new key, one prints the first
	 * line and the other adds to the entry. */
	if (bpf_map_update_elem(&aggregates, key, t, BPF_NOEXIST) == 0) {
		if (submit(&t->ev) == 0)
			return;
		counter_inc(&lost, key->type);
	} else if (!bpf_map_lookup_elem(&aggregates, key)) {
		/* Table full: a line of its own rather than a lost count. */
		if (submit(&t->ev))
			counter_inc(&lost, key->type);
		return;
	}
	v = bpf_map_lookup_elem(&aggregates, key);
	if (v)
		agg_add_n(v, now, wait_ns, n);
}

static __always_inline void agg_commit(struct agg_key *key, struct agg_value *t, __u64 wait_ns)
{
	agg_commit_n(key, t, wait_ns, 1);
}

/* One send-path occurrence on `sk`. `given`, when set, is the snapshot to
 * report instead of the socket's state now: a wait is explained by the state
 * that made the sender wait, not by the state that released it. */
static __always_inline void aggregate(struct sock *sk, __u32 type, __u8 path, int ret, __u64 wait_ns,
				      const struct tcp_snapshot *given)
{
	struct agg_key key = { .sk = (__u64)sk, .type = type };
	SCRATCH_EVENT(t);

	if (agg_hit(&key, wait_ns))
		return;
	t = agg_template_on(type, path);
	if (!t)
		return;
	t->ev.ret = ret;
	fill_task(&t->ev);
	if (given)
		__builtin_memcpy(&t->ev.s, given, sizeof(t->ev.s));
	else
		read_snapshot(sk, &t->ev.s);
	agg_commit(&key, t, wait_ns);
}

#endif /* COMMON_BPF_H */
