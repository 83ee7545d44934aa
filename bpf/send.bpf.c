/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Detector send: send_eagain, send_blocked, a send on a TCP socket that hit
 * a full send buffer.
 *
 * send_eagain: tcp_sendmsg_locked() jumps to wait_for_space when
 * sk_stream_memory_free() fails (sk_wmem_queued >= sk_sndbuf, or the
 * notsent_lowat test) or memory accounting fails; sk_stream_wait_memory()
 * returns -EAGAIN at once when the send has no timeout (O_NONBLOCK,
 * MSG_DONTWAIT), and the application sees -EAGAIN only if nothing was copied.
 * So the hooks look at the value the application gets, not at the wait.
 *
 * send_blocked: a blocking send sleeps in sk_stream_wait_memory() until ACKs
 * free space; the fentry/kprobe paths time that call.
 *
 * Paths (the probe table picks the first that loads and attaches):
 *   tracepoint  tp_btf/sock_send_length (6.3+): every sendmsg's return value
 *   fentry      fexit/tcp_sendmsg; fentry+fexit on sk_stream_wait_memory
 *   kprobe      kprobe+kretprobe on the same functions
 * The programs on a send's return are shared with the Nagle detector and
 * live in tcptrace.bpf.c; they call on_send_return() and wait_end().
 */
#include "common.bpf.h"

#define MSG_DONTWAIT 0x40

/*
 * Runs on every send of every socket on the host: the test of `ret` comes
 * first, so that all but the failing sends leave after a compare.
 */
static __shared_hook int on_send_return(struct sock *sk, int ret, __u8 path)
{
	__u32 tgid;

	if (ret != -EAGAIN)
		return 0;
	if (!sk || !is_tcp(sk))
		return 0;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (!current_wanted(tgid) || !sock_wanted(sk))
		return 0;
	aggregate(sk, EVENT_SEND_EAGAIN, path, ret, 0, NULL);
	return 0;
}

/*
 * Blocking waits. A send with a timeout (no O_NONBLOCK, no MSG_DONTWAIT) that
 * finds the buffer full sleeps in sk_stream_wait_memory() until ACKs free
 * space, the timeout (SO_SNDTIMEO) passes, or a signal comes. The wait is
 * timed per thread: wait_begin when it starts, wait_end when the thread runs
 * again. While a thread sleeps its entry stays in wait_starts, and user space
 * reports it every interval ("still waiting"): a sender stuck for minutes on
 * a dead path is seen while it is stuck, not after.
 */
DEFINE_MAP(wait_starts, BPF_MAP_TYPE_HASH, __u64, struct event, 16384); /* key: pid_tgid */

DEFINE_MAP(snap_scratch, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct tcp_snapshot, 1);

/* Entries in wait_starts. The hot paths test this before any lookup, so a
 * host with no blocked sender pays one load per send for send_blocked. */
__u64 waiters = 0;

static __always_inline void wait_begin(struct sock *sk, __u8 path)
{
	__u64 id = bpf_get_current_pid_tgid();
	SCRATCH_EVENT(v);

	if (!is_tcp(sk) || !current_wanted(id >> 32) || !sock_wanted(sk))
		return;
	v = agg_template(EVENT_SEND_BLOCKED);
	if (!v)
		return;
	v->ev.ts_ns = bpf_ktime_get_ns();
	v->ev.path = path;
	v->ev.count = 1;
	fill_task(&v->ev);
	read_snapshot(sk, &v->ev.s);
	if (bpf_map_update_elem(&wait_starts, &id, &v->ev, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&waiters, 1);
}

static __shared_hook void wait_end(int ret, __u8 path)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct event *w = bpf_map_lookup_elem(&wait_starts, &id);
	__u32 zero = 0;
	struct tcp_snapshot *snap;
	__u64 waited;

	if (!w)
		return;
	waited = bpf_ktime_get_ns() - w->ts_ns;
	if (ret == -EAGAIN && waited < 1000000) {
		/* No timeout after all (MSG_DONTWAIT): not a wait. */
		if (bpf_map_delete_elem(&wait_starts, &id) == 0)
			__sync_fetch_and_add(&waiters, -1);
		return;
	}
	/* The entry is about to go: keep its snapshot in a slot of its own.
	 * Only a sender's own return runs this (process context), so no
	 * program nested on this CPU can be using the slot. */
	snap = bpf_map_lookup_elem(&snap_scratch, &zero);
	if (!snap)
		return;
	__builtin_memcpy(snap, &w->s, sizeof(*snap));
	if (bpf_map_delete_elem(&wait_starts, &id) == 0)
		__sync_fetch_and_add(&waiters, -1);
	aggregate((struct sock *)snap->sk, EVENT_SEND_BLOCKED, path, ret, waited, snap);
}

/*
 * tcp:tcp_sendmsg_locked (6.16+) fires at the top of each pass of
 * tcp_sendmsg_locked()'s copy loop, just before the loop tests
 * sk_stream_memory_free() to start a new segment. A pass that follows a wait
 * marks the wait's end; a pass that needs a new segment (no tail skb, or the
 * tail is full) in a full buffer is about to sleep. Allocation failures that
 * also lead to a wait are not seen here (the fentry and kprobe paths time
 * every wait).
 */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tp_tcp_sendmsg_locked, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	if (waiters)
		wait_end(0, PATH_TRACEPOINT);
	/* Runs on every pass of every TCP send: the arguments are trusted BTF
	 * pointers, so the tests below are direct loads, cheapest first. A
	 * wait that notsent_lowat causes with room left in the buffer is not
	 * seen here: testing it would cost every pass a helper call and four
	 * more loads, for a setting made for non-blocking senders (the fentry
	 * and kprobe paths time every wait). */
	if (skb && skb->len < (unsigned int)size_goal)
		return 0; /* room in the tail skb: no memory test on this pass */
	if (msg->msg_flags & MSG_DONTWAIT)
		return 0; /* does not sleep: send_eagain's case */
	if (sk->sk_wmem_queued >= sk->sk_sndbuf)
		wait_begin(sk, PATH_TRACEPOINT);
	return 0;
}

/*
 * On the fentry and kprobe paths the wait function itself is timed. It is
 * reached only from wait_for_space, never on an ordinary send. A call with
 * no timeout does not sleep: the kprobe reads *timeo_p; fentry cannot (5.10
 * refuses a pointer-to-long argument in the context), so it leaves out
 * O_NONBLOCK sockets at entry and, at exit, an -EAGAIN that took no time
 * (MSG_DONTWAIT).
 */
#define O_NONBLOCK 04000

static __always_inline int on_wait_enter(struct sock *sk, long *timeo_p, __u8 path)
{
	long timeo = 0;

	if (timeo_p) {
		bpf_probe_read_kernel(&timeo, sizeof(timeo), timeo_p);
		if (!timeo)
			return 0;
	} else if (BPF_CORE_READ(sk, sk_socket, file, f_flags) & O_NONBLOCK) {
		return 0;
	}
	wait_begin(sk, path);
	return 0;
}

SEC("fentry/sk_stream_wait_memory")
int BPF_PROG(fentry_sk_stream_wait_memory, struct sock *sk)
{
	return on_wait_enter(sk, NULL, PATH_FENTRY);
}

SEC("fexit/sk_stream_wait_memory")
int BPF_PROG(fexit_sk_stream_wait_memory, struct sock *sk, __u64 timeo_p, int ret)
{
	if (waiters)
		wait_end(ret, PATH_FENTRY);
	return 0;
}

SEC("kprobe/sk_stream_wait_memory")
int BPF_KPROBE(kprobe_sk_stream_wait_memory, struct sock *sk, long *timeo_p)
{
	return on_wait_enter(sk, timeo_p, PATH_KPROBE);
}

SEC("kretprobe/sk_stream_wait_memory")
int BPF_KRETPROBE(kretprobe_sk_stream_wait_memory, int ret)
{
	if (waiters)
		wait_end(ret, PATH_KPROBE);
	return 0;
}
