/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector: listener pathologies.
 *
 * syn_drop / syn_cookie. tcp_conn_request() returns 0 whatever it does with a
 * SYN, and the dropped SYN is freed with consume_skb(), not kfree_skb(), so
 * no drop reason names it (shared/KERNEL.md sections 3 and 4). What does
 * record each branch is the network namespace's SNMP counters, incremented
 * per CPU with bottom halves off while the SYN is processed:
 *   ListenOverflows + ListenDrops   accept queue full       (drop)
 *   TCPReqQFullDrop + ListenDrops   SYN queue full, no cookies (drop)
 *   TCPReqQFullDoCookies            SYN queue full, cookie sent (no drop)
 *   ListenDrops alone               last-quarter rule, no memory, route, LSM
 * So the detector reads this CPU's counters of the SYN's namespace around
 * the SYN: with fentry/fexit or kprobes on tcp_conn_request() before and
 * after; on the tracepoint path, at the SYN's own consume_skb() (6.3+, whose
 * `location` says the caller was tcp_rcv_state_process()) against what the
 * previous SYN on this CPU left. Same CPU, softirq: nothing else runs in
 * between, except a third-ACK overflow, whose handler moves the baseline
 * too. The first SYN a CPU sees in a namespace has no baseline and is judged
 * by the listener's queues instead.
 *
 * listen_overflow: tcp_check_req() could not create the child because the
 * accept queue was full; 6.15+ frees the ACK with the drop reason
 * TCP_LISTEN_OVERFLOW (skb:kfree_skb, rx_sk = listener). fentry/kprobe:
 * tcp_v4_syn_recv_sock()/tcp_v6_syn_recv_sock() returning NULL with
 * ListenOverflows moved.
 *
 * synack_retransmit: tcp:tcp_retransmit_synack, every version.
 */
#include "owner.bpf.c"
#include "mib.bpf.h"

/* tcp_rcv_state_process()'s text, from /proc/kallsyms: a consume_skb() from
 * there is the SYN that tcp_conn_request() just handled. */
const volatile __u64 cfg_rsp_start = 0;
const volatile __u64 cfg_rsp_end = 0;

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
};

/* The counters as the previous SYN on this CPU left them, per namespace. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64); /* struct net * */
	__type(value, struct mibs);
} mib_baseline SEC(".maps");

/* fentry/kprobe: the counters at tcp_conn_request()'s entry on this CPU. */
struct conn_req_entry {
	struct mibs m;
	__u64 sk;
	__u64 skb;
	__u8 ok;
};

/* Slot 0: tcp_conn_request(); slot 1: *_syn_recv_sock(), which a Fast Open
 * SYN reaches from inside tcp_conn_request(). */
#define SLOT_CONN_REQUEST 0
#define SLOT_SYN_RECV 1

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct conn_req_entry);
} conn_req_entries SEC(".maps");

/* SYN-ACK retransmits seen per request (the kernel's num_retrans moved
 * from after to before the tracepoint over the versions: the larger wins). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} synack_counts SEC(".maps");

/* This CPU's counters of net. tcp_sk is any TCP socket (for the anchor). */
static __always_inline bool read_mibs(struct net *net, struct sock *tcp_sk, struct mibs *m)
{
	__u64 off, base;

	if (!cfg_mib_ok || !this_cpu_off(tcp_sk, &off))
		return false;
	base = (__u64)BPF_CORE_READ(net, mib.net_statistics);
	if (!base)
		return false;
	base += off;
	m->overflows = mib_read(base, mib_listen_overflows);
	m->drops = mib_read(base, mib_listen_drops);
	m->reqq_drop = mib_read(base, mib_reqq_full_drop);
	m->cookies = mib_read(base, mib_reqq_full_cookies);
	return true;
}

/* The namespace a received skb belongs to. TCP has cleared skb->dev by the
 * time the SYN is consumed; the input route (skb->_skb_refdst, low bit a
 * no-reference flag) still names the receiving device. */
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
static __always_inline void listen_event(__u32 type, __u32 reason, __u8 path, struct sock *l,
					 struct sk_buff *skb, struct request_sock *req)
{
	struct agg_key key = { .sk = (__u64)l, .type = type, .sub = reason };
	SCRATCH_EVENT(t);

	if (l && !owner_wanted(l))
		return;
	if (!l && cfg_filter_pid)
		return;
	if (agg_hit(&key, 0))
		return;
	t = agg_template(type);
	if (!t)
		return;
	t->ev.path = path;
	t->ev.l.reason = reason;
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
		__u64 rk = (__u64)req;
		__u32 one = 1, *n = bpf_map_lookup_elem(&synack_counts, &rk);
		__u32 seen = 1, kernel = BPF_CORE_READ(req, num_retrans);

		if (n) {
			/* One timer per request: no race on its count. */
			*n += 1;
			seen = *n;
		} else
			bpf_map_update_elem(&synack_counts, &rk, &one, BPF_ANY);
		t->ev.l.retransmits = seen > kernel ? seen : kernel;
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

/* Judged by the queues alone: the first SYN on a CPU and namespace. */
static __always_inline __u32 syn_outcome_by_state(struct sock *l, __u32 *reason)
{
	__u32 backlog = BPF_CORE_READ(l, sk_ack_backlog);
	__u32 max = BPF_CORE_READ(l, sk_max_ack_backlog);

	if (backlog > max) {
		*reason = LISTEN_ACCEPT_QUEUE_FULL;
		return EVENT_SYN_DROP;
	}
	return 0;
}

/* now: the counters after the SYN; before: ahead of it, NULL if unknown. */
static __always_inline void on_syn_done(struct net *net, struct sock *l, struct sk_buff *skb,
					const struct mibs *before, const struct mibs *now, __u8 path)
{
	__u32 reason = 0, type;

	type = before ? syn_outcome(before, now, &reason) : syn_outcome_by_state(l, &reason);
	if (!type)
		return;
	if (type == EVENT_SYN_COOKIE && BPF_CORE_READ(net, ipv4.sysctl_tcp_syncookies) == 2)
		reason = LISTEN_SYNCOOKIES_ALWAYS;
	listen_event(type, refine_other(l, reason), path, l, skb, NULL);
}

SEC("tp_btf/consume_skb")
int BPF_PROG(tp_consume_skb, struct sk_buff *skb, void *location)
{
	struct mibs now, *base;
	struct net *net;
	struct sock *l;
	__u16 ports[2];
	__u64 key;

	/* Every consumed skb on the host comes here: two compares and out. */
	if ((__u64)location < cfg_rsp_start || (__u64)location >= cfg_rsp_end)
		return 0;
	net = skb_net(skb);
	if (!net)
		return 0;
	bpf_probe_read_kernel(ports, sizeof(ports), skb->head + skb->transport_header);
	l = find_listener(BPF_CORE_READ(net, ns.inum), bpf_ntohs(ports[1]));
	if (!l || !read_mibs(net, l, &now))
		return 0;
	key = (__u64)net;
	base = bpf_map_lookup_elem(&mib_baseline, &key);
	if (!base) {
		bpf_map_update_elem(&mib_baseline, &key, &now, BPF_ANY);
		on_syn_done(net, l, skb, NULL, &now, PATH_TRACEPOINT);
		return 0;
	}
	/* Any change at all is rare: most SYNs are accepted. */
	if (base->drops != now.drops || base->cookies != now.cookies) {
		on_syn_done(net, l, skb, base, &now, PATH_TRACEPOINT);
		__builtin_memcpy(base, &now, sizeof(now));
	}
	return 0;
}

/* fentry/kprobe: counters before tcp_conn_request(sk = listener). */
static __always_inline void conn_request_enter(struct sock *sk, struct sk_buff *skb)
{
	__u32 slot = SLOT_CONN_REQUEST;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);

	if (!e)
		return;
	e->sk = (__u64)sk;
	e->skb = (__u64)skb;
	e->ok = read_mibs(BPF_CORE_READ(sk, __sk_common.skc_net.net), sk, &e->m);
}

static __always_inline void conn_request_exit(__u8 path)
{
	__u32 slot = SLOT_CONN_REQUEST;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);
	struct mibs now;
	struct net *net;
	struct sock *l;

	if (!e || !e->ok)
		return;
	e->ok = 0;
	l = (struct sock *)e->sk;
	net = BPF_CORE_READ(l, __sk_common.skc_net.net);
	if (read_mibs(net, l, &now))
		on_syn_done(net, l, (struct sk_buff *)e->skb, &e->m, &now, path);
}

SEC("fentry/tcp_conn_request")
int BPF_PROG(fentry_tcp_conn_request, struct request_sock_ops *rsk_ops, void *af_ops, struct sock *sk,
	     struct sk_buff *skb)
{
	conn_request_enter(sk, skb);
	return 0;
}

SEC("fexit/tcp_conn_request")
int BPF_PROG(fexit_tcp_conn_request, struct request_sock_ops *rsk_ops, void *af_ops, struct sock *sk,
	     struct sk_buff *skb, int ret)
{
	conn_request_exit(PATH_FENTRY);
	return 0;
}

SEC("kprobe/tcp_conn_request")
int BPF_KPROBE(kprobe_tcp_conn_request, struct request_sock_ops *rsk_ops, void *af_ops, struct sock *sk,
	       struct sk_buff *skb)
{
	conn_request_enter(sk, skb);
	return 0;
}

SEC("kretprobe/tcp_conn_request")
int BPF_KRETPROBE(kretprobe_tcp_conn_request, int ret)
{
	conn_request_exit(PATH_KPROBE);
	return 0;
}

/* A third-ACK overflow moved ListenOverflows and ListenDrops on this CPU:
 * move the SYN baseline with them, so the next SYN is not blamed. */
static __always_inline void rebase_mibs(struct sock *l)
{
	struct net *net = BPF_CORE_READ(l, __sk_common.skc_net.net);
	__u64 key = (__u64)net;
	struct mibs now;

	if (read_mibs(net, l, &now))
		bpf_map_update_elem(&mib_baseline, &key, &now, BPF_ANY);
}

static __always_inline void on_listen_overflow(struct sock *l, struct sk_buff *skb, __u8 path)
{
	rebase_mibs(l);
	listen_event(EVENT_LISTEN_OVERFLOW, LISTEN_ACCEPT_QUEUE_FULL, path, l, skb, NULL);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
{
	/* Every dropped skb comes here: one compare and out. The value is the
	 * running kernel's, by name (the enum is renumbered between versions). */
	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW))
		return 0;
	if (!rx_sk)
		return 0;
	on_listen_overflow(rx_sk, skb, PATH_TRACEPOINT);
	return 0;
}

/* fentry/kprobe: the child could not be made; ListenOverflows says why.
 * The entry parks the listener and the skb (kretprobes see no arguments). */
static __always_inline void syn_recv_enter(struct sock *sk, struct sk_buff *skb)
{
	__u32 slot = SLOT_SYN_RECV;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);

	if (!e)
		return;
	e->sk = (__u64)sk;
	e->skb = (__u64)skb;
	e->ok = read_mibs(BPF_CORE_READ(sk, __sk_common.skc_net.net), sk, &e->m);
}

static __always_inline void syn_recv_exit(void *child, __u8 path)
{
	__u32 slot = SLOT_SYN_RECV;
	struct conn_req_entry *e = bpf_map_lookup_elem(&conn_req_entries, &slot);
	struct sock *l;
	struct mibs now;

	if (!e || !e->ok || child)
		return;
	e->ok = 0;
	l = (struct sock *)e->sk;
	if (!read_mibs(BPF_CORE_READ(l, __sk_common.skc_net.net), l, &now) || now.overflows == e->m.overflows)
		return;
	on_listen_overflow(l, (struct sk_buff *)e->skb, path);
}

SEC("fentry/tcp_v4_syn_recv_sock")
int BPF_PROG(fentry_tcp_v4_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	syn_recv_enter(sk, skb);
	return 0;
}

/*
 * fexit finds the return value after the last argument, and the verifier
 * wants a constant context offset: one program per argument count (BTF
 * says which the kernel has; tracer/probes.go loads that one).
 */
SEC("fexit/tcp_v4_syn_recv_sock")
int fexit_tcp_v4_syn_recv_sock(__u64 *ctx)
{
	syn_recv_exit((void *)ctx[7], PATH_FENTRY);
	return 0;
}

SEC("fexit/tcp_v4_syn_recv_sock")
int fexit_tcp_v4_syn_recv_sock_6args(__u64 *ctx)
{
	syn_recv_exit((void *)ctx[6], PATH_FENTRY);
	return 0;
}

SEC("fentry/tcp_v6_syn_recv_sock")
int BPF_PROG(fentry_tcp_v6_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	syn_recv_enter(sk, skb);
	return 0;
}

SEC("fexit/tcp_v6_syn_recv_sock")
int fexit_tcp_v6_syn_recv_sock(__u64 *ctx)
{
	syn_recv_exit((void *)ctx[7], PATH_FENTRY);
	return 0;
}

SEC("fexit/tcp_v6_syn_recv_sock")
int fexit_tcp_v6_syn_recv_sock_6args(__u64 *ctx)
{
	syn_recv_exit((void *)ctx[6], PATH_FENTRY);
	return 0;
}

SEC("kprobe/tcp_v4_syn_recv_sock")
int BPF_KPROBE(kprobe_tcp_v4_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	syn_recv_enter(sk, skb);
	return 0;
}

SEC("kretprobe/tcp_v4_syn_recv_sock")
int BPF_KRETPROBE(kretprobe_tcp_v4_syn_recv_sock, void *ret)
{
	syn_recv_exit(ret, PATH_KPROBE);
	return 0;
}

SEC("kprobe/tcp_v6_syn_recv_sock")
int BPF_KPROBE(kprobe_tcp_v6_syn_recv_sock, struct sock *sk, struct sk_buff *skb)
{
	syn_recv_enter(sk, skb);
	return 0;
}

SEC("kretprobe/tcp_v6_syn_recv_sock")
int BPF_KRETPROBE(kretprobe_tcp_v6_syn_recv_sock, void *ret)
{
	syn_recv_exit(ret, PATH_KPROBE);
	return 0;
}

/* tcp:tcp_retransmit_synack(sk = listener, req), from the request's timer.
 * acked: the final ACK came but the accept queue was full (tcp_check_req's
 * listen_overflow sets it); otherwise the ACK never came. */
SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tp_tcp_retransmit_synack, struct sock *sk, struct request_sock *req)
{
	__u8 acked = BPF_CORE_READ_BITFIELD_PROBED((struct inet_request_sock *)req, acked);

	listen_event(EVENT_SYNACK_RETRANSMIT, acked ? LISTEN_ACCEPT_QUEUE_FULL : LISTEN_NO_FINAL_ACK,
		     PATH_TRACEPOINT, sk, NULL, req);
	return 0;
}
