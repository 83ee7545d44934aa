/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one compilation unit: bpf2go builds one object, so every detector
 * shares the same maps (ring buffer, filters, aggregation) and one event
 * definition. Each detector lives in a file of its own, included here.
 */
#include "listen.bpf.c"
#include "send_return.bpf.c" /* send.bpf.c, nagle.bpf.c, delack.bpf.c */
#include "connect.bpf.c"
#include "shared_hooks.bpf.c" /* inet_sock_set_state, timer_start */

/* Unused by the programs: they keep the two enums in the object's BTF so that
 * bpf2go -type generates their Go constants from this one definition. */
const volatile enum event_type btf_anchor_event_type;
const volatile enum probe_path btf_anchor_probe_path;
const volatile enum listen_reason btf_anchor_listen_reason;
const volatile enum shared_hook btf_anchor_shared_hook;
const volatile enum conn_limits btf_anchor_conn_limits;

/* GPL: tp_btf, fentry and ring buffer helpers are GPL-only. */
char LICENSE[] SEC("license") = "GPL";
