/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One program for each of two hooks that several detectors need and that run
 * all the time: sock:inet_sock_set_state (every TCP state change of the host)
 * and timer:timer_start (every timer_list armed). A program per detector
 * would pay the tracepoint's dispatch once per detector (about 75 ns per
 * program on 6.18, measured with bpf_stats); here each hook pays it once and
 * the detectors that are not in use cost a bit test. The loader sets their
 * bits in hooks_on (enum shared_hook) once their path is attached.
 */

/* Owners (bpf/owner.bpf.c) run first: a connection's owner is recorded at
 * SYN_SENT before connect()'s own handler may need it; and their records of
 * a socket that ends are dropped last. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_inet_sock_set_state, struct sock *sk, int oldstate, int newstate)
{
	__u32 on = hooks_on;

	if (on & HOOK_OWNERS)
		owner_set_state(sk, oldstate, newstate);
	if (on & HOOK_CONNECT)
		conn_set_state(sk, oldstate, newstate);
	if (on & HOOK_PORTS)
		port_set_state(sk, oldstate, newstate);
	if (on & HOOK_TIMEWAIT)
		tw_set_state(sk, oldstate, newstate);
	/* Last: the handlers above may read what a socket that ends leaves. */
	if (on & HOOK_OWNERS) {
		owner_forget(sk, newstate);
		conn_forget(sk, oldstate);
	}
	return 0;
}

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
