/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The hooks on a send's return, shared by three detectors: send_eagain (the
 * call failed with -EAGAIN), send_blocked's tracepoint path (a wait that
 * ended with the call) and nagle_stall (bytes left unsent behind a small
 * segment). Each hook runs on every send of the host, so there is one
 * program per hook, not one per detector: the loader attaches it once and
 * sets the detector's bit in hooks_on when that detector's path is in use.
 */
#include "send.bpf.c"
#include "nagle.bpf.c"

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
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} sendmsg_sk SEC(".maps");

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
