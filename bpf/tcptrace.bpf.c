/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one compilation unit bpf2go builds: every detector, one file each and
 * named like it, then the programs on the hooks that several detectors
 * share. A detector file holds its maps, its handlers and the programs on
 * hooks only it uses; what two of them share is in a header.
 *
 * Why one object. A send's return, a TCP state change and a timer's arming
 * happen all the time on a busy host, and several detectors need each. So
 * each of these hooks has one program, below, that calls the handler of
 * every detector in use, inline: the hook pays the dispatch into BPF (the
 * tracepoint's or trampoline's call, program entry and exit) once however
 * many detectors run, and a detector not in use costs a bit test of
 * hooks_on. Handlers in separate objects, linked statically (bpftool gen
 * object), could only be global functions, which the linker does not
 * inline: a BPF-to-BPF call each, and each function verified on its own
 * from its declared argument types, so the trusted struct sock * that
 * socket storage (bpf_sk_storage_get) and direct loads need cannot be
 * passed to one before 6.9, and only with the arg:trusted tag since.
 */
#include "common.bpf.h"

#include "owners.bpf.c"
#include "listen.bpf.c"
#include "mib_baseline.bpf.c"
#include "send.bpf.c"
#include "delack.bpf.c"
#include "nagle.bpf.c"
#include "connect.bpf.c"
#include "ports.bpf.c"
#include "timewait.bpf.c"
#include "paws.bpf.c"
#include "reset.bpf.c"
#include "retransmit.bpf.c"
#include "retransmit_stall.bpf.c"

/* ---- A send's return: send (send_eagain, send_blocked), nagle ---------- */

/* A verifier-only cast (6.2+; sock_send_length is 6.3+): the kernel
 * rewrites the call into a register move, and loads through the result are
 * fault-safe BTF loads. No helper call on the hot path. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/*
 * sock:sock_send_length(sk, ret, flags) fires in sock_sendmsg_nosec() after
 * ->sendmsg returns, for send, sendto, sendmsg, write and writev alike. A
 * successful send to a socket that sent everything (the common case), and
 * any send on another protocol, leave after direct loads.
 */
SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_sock_send_length, struct sock *sk, int ret, int flags)
{
	__u32 on = hooks_on;
	struct tcp_sock *tp;

	/* A wait that tcp_sendmsg_locked's tracepoint saw begin ends here
	 * when the call returns without another pass of the copy loop (the
	 * wait failed: timeout, signal, error). */
	if (waiters && (on & HOOK_SEND_WAIT))
		wait_end(ret, PATH_TRACEPOINT);
	if (ret == -EAGAIN) {
		if (on & HOOK_SEND_EAGAIN)
			on_send_return(sk, ret, PATH_TRACEPOINT);
		return 0;
	}
	if (ret <= 0 || !(on & HOOK_NAGLE))
		return 0;
	if (sk->sk_protocol != IPPROTO_TCP || sk->sk_type != SOCK_STREAM)
		return 0;
	tp = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct tcp_sock));
	if (tp->write_seq == tp->snd_nxt)
		return 0;
	nagle_check(sk, PATH_TRACEPOINT);
	return 0;
}

/* fentry and kprobe paths (before 6.3): tcp_sendmsg's return. */
static __always_inline void on_tcp_sendmsg_return(struct sock *sk, int ret, __u8 path)
{
	__u32 on = hooks_on;

	if (ret == -EAGAIN) {
		if (on & HOOK_SEND_EAGAIN)
			on_send_return(sk, ret, path);
		return;
	}
	if (ret > 0 && (on & HOOK_NAGLE))
		nagle_check(sk, path);
}

SEC("fexit/tcp_sendmsg")
int BPF_PROG(fexit_tcp_sendmsg, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	on_tcp_sendmsg_return(sk, ret, PATH_FENTRY);
	return 0;
}

/* kretprobes do not see arguments: the entry probe parks sk per thread. */
DEFINE_MAP(sendmsg_sk, BPF_MAP_TYPE_HASH, __u64, __u64, 16384);

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kprobe_tcp_sendmsg, struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 v = (__u64)sk;

	bpf_map_update_elem(&sendmsg_sk, &id, &v, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kretprobe_tcp_sendmsg, int ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *skp = bpf_map_lookup_elem(&sendmsg_sk, &id);
	struct sock *sk;

	if (!skp)
		return 0;
	sk = (struct sock *)*skp;
	bpf_map_delete_elem(&sendmsg_sk, &id);
	on_tcp_sendmsg_return(sk, ret, PATH_KPROBE);
	return 0;
}

/* ---- A TCP state change: owner, nagle, connect, ports, timewait, retransmit */

/*
 * sock:inet_sock_set_state, every TCP state change of the host. Owners run
 * first: a connection's owner, and on this path its connect() start, are
 * recorded at SYN_SENT before connect's own handler may need them; and their
 * records of a socket that ends are dropped last. A connection that leaves
 * ESTABLISHED names no owner; it ends a Nagle hold, which tcp_probe no
 * longer follows.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	__u32 on = hooks_on;

	if (on & HOOK_OWNERS) {
		if (oldstate == TCP_ESTABLISHED)
			nagle_leave_established(sk);
		else
			owner_set_state(sk, oldstate, newstate, on & HOOK_CONNECT);
	}
	if (on & HOOK_CONNECT)
		conn_set_state(sk, oldstate, newstate);
	if (on & HOOK_PORTS)
		port_set_state(sk, oldstate, newstate);
	if (on & HOOK_TIMEWAIT)
		tw_set_state(sk, oldstate, newstate);
	/* Last: the handlers above may read what a socket that ends leaves. */
	if (on & HOOK_OWNERS)
		owner_forget(sk, newstate);
	if (on & HOOK_RETRANSMIT)
		retransmit_forget(sk, newstate);
	return 0;
}

/* ---- A retransmission: connect (SYN), retransmit (past the handshake) -- */


/*
 * Every retransmission passes here; SYN retransmits are connect's, those
 * past the handshake retransmit's. The fentry and kprobe paths see the
 * return of tcp_retransmit_skb(), which the timer and the queue call; a tail
 * loss probe calls __tcp_retransmit_skb() directly (retransmit.bpf.c).
 */
static __always_inline void on_tcp_retransmit(struct sock *sk, struct sk_buff *skb, int err, __u8 path)
{
	__u32 on = hooks_on;

	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_SYN_SENT) {
		if (on & HOOK_SYN_RTX)
			on_syn_retransmit(sk, path, err);
		return;
	}
	if ((on & HOOK_RETRANSMIT) && rtx_state(sk))
		on_retransmit(sk, skb, path, err);
}

/* Up to 6.16: fires only for a retransmit that was sent. */
TP_PROG(tcp_retransmit_skb, tp_tcp_retransmit_skb, on_tcp_retransmit(sk, skb, 0, path), struct sock *sk,
	struct sk_buff *skb)
/* 6.17+: fires for every attempt, with its result. */
TP_PROG(tcp_retransmit_skb, tp_tcp_retransmit_skb_err, on_tcp_retransmit(sk, skb, err, path), struct sock *sk,
	struct sk_buff *skb, int err)

SEC("fexit/tcp_retransmit_skb")
int BPF_PROG(fexit_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb, int segs, int ret)
{
	on_tcp_retransmit(sk, skb, ret, PATH_FENTRY);
	return 0;
}

/* Whether the kprobe path parks a call to tcp_retransmit_skb(): one that
 * on_tcp_retransmit() will not leave at once. */
static __always_inline bool tcp_retransmit_wanted(struct sock *sk)
{
	__u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
	__u32 on = hooks_on;

	if ((state == TCP_SYN_SENT && (on & HOOK_SYN_RTX)) || ((on & HOOK_RETRANSMIT) && (TCPF(state) & RTX_STATES)))
		return true;
	return false;
}

/* kprobe_tcp_retransmit_skb, kretprobe_tcp_retransmit_skb */
RTX_KPROBES(tcp_retransmit_skb, tcp_retransmit_skb, tcp_retransmit_wanted(sk), on_tcp_retransmit(sk, skb, ret, path))

/* ---- A segment received: nagle, retransmit (rto_stall) ---------------- */

/*
 * tcp:tcp_probe, at the top of tcp_rcv_established(), for every segment an
 * established connection receives: on every path, since it is in every
 * supported kernel. A segment leaves after a load while no Nagle hold is
 * open and one while no connection is in an RTO episode (the common
 * case); while one is, after a second, its socket's slot in rto_slots:
 * only a socket whose slot is in use has its socket read (retransmit_stall.bpf.c).
 */
SEC("tp_btf/tcp_probe")
int BPF_PROG(tp_tcp_probe, struct sock *sk, struct sk_buff *skb)
{
	if (nagle_holders)
		nagle_release(sk, skb);
	if (!rto_episodes || !(hooks_on & HOOK_RTO_STALL))
		return 0;
	if (!rto_slots[sk->__sk_common.skc_hash & (RTO_SLOTS - 1)])
		return 0;
	rto_stall_check(sk, skb);
	return 0;
}

/* ---- A dropped skb: listen_overflow, paws_reject ----------------------- */

/*
 * kfree_skb with the socket that refused the segment (6.11+; the older
 * form, without it, has paws's program of its own): every dropped packet of
 * the host, each detector's test of the reason a compare or two. One
 * program for both: two cost a program run each on every drop (churn, one
 * drop a connection: 75 ns for the two against 53-74 for one empty).
 */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
{
	__u32 on = hooks_on;

	if (on & HOOK_LISTEN_OVERFLOW)
		listen_kfree_skb(skb, location, reason, rx_sk);
	if ((on & HOOK_PAWS) && paws_reason(reason))
		on_paws(skb, reason, rx_sk, PATH_TRACEPOINT);
	return 0;
}

/* ---- A timer armed: delack, timewait ----------------------------------- */

/*
 * timer_start: (timer, expires, flags) up to 6.7, (timer, bucket_expiry)
 * from 6.8; only the timer is used. Every other timer of the kernel leaves
 * after one load (the callback, a direct read of the trusted argument) and
 * two compares.
 */
SEC("tp_btf/timer_start")
int BPF_PROG(tp_timer_start, struct timer_list *timer)
{
	__u64 fn = (__u64)timer->function;

	if (fn == cfg_delack_fn) {
		if (hooks_on & HOOK_DELACK)
			delack_timer_start(timer);
	} else if (fn == cfg_tw_timer_handler) {
		if (hooks_on & HOOK_TIMEWAIT)
			tw_timer_start(timer);
	}
	return 0;
}

/* Unused by the programs: they keep the enums in the object's BTF so that
 * bpf2go -type generates their Go constants from this one definition. */
const volatile enum event_type btf_anchor_event_type;
const volatile enum probe_path btf_anchor_probe_path;
const volatile enum listen_reason btf_anchor_listen_reason;
const volatile enum shared_hook btf_anchor_shared_hook;
const volatile enum conn_limits btf_anchor_conn_limits;
const volatile enum rtx_kind btf_anchor_rtx_kind;
const volatile enum rto_stall_kind btf_anchor_rto_stall_kind;
const volatile enum rto_max_knob btf_anchor_rto_max_knob;

/* GPL: tp_btf, fentry and ring buffer helpers are GPL-only. */
char LICENSE[] SEC("license") = "GPL";
