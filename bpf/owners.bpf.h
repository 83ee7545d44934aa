/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Who owns a socket. Listener events happen in softirq (a SYN, a final ACK)
 * or timer context (a SYN-ACK retransmit), where the running task is
 * whoever was interrupted; --pid and the pid/comm of an event must come from
 * the socket, not from the task.
 *
 * owner_sets: socket -> the process that made it, keyed by the socket's
 *            address: the record every path can read (kprobe programs get
 *            a socket as a bare address, and so do sockets kept in a map: a
 *            listener, a delayed-ACK timer's socket). Written when a socket
 *            starts listening or connecting (inet_sock_set_state to LISTEN
 *            or SYN_SENT, in the owner's process) and dropped when it
 *            closes; an accepted connection has none of its own: it is its
 *            listener's (table_owner()). A connect()'s record also holds
 *            when it began (struct conn_start), for the connect detector:
 *            the same write. An array of sets of OWNER_WAYS records, the set
 *            chosen by the address: finding, writing and dropping a record
 *            is an inlined array lookup and a few compares in one cache
 *            line, where a hash table took its bucket's lock and jhash at
 *            every connect() and every close (about 0.5 us a connection
 *            under churn). A record claims its way with a compare-and-swap
 *            (BPF_CMPXCHG, 5.12+; the loader tries it and sets
 *            cfg_owner_sets), so two CPUs never take the same way.
 * owners:    the same as a plain hash table: the records of a set that is
 *            full, and every record on a kernel without BPF_CMPXCHG. Sized
 *            by user space from the host's socket count: when full it
 *            refuses the newest socket rather than evicting a live one,
 *            whose owner an LRU would lose for good; a refused socket goes
 *            to owner_store. owners_spilled counts its records while sets
 *            are in use, so that a close and a lookup of a socket the sets
 *            lack skip the hash while it is empty.
 * owner_store: the same in the socket's own local storage
 *            (BPF_MAP_TYPE_SK_STORAGE): the kernel frees the record with the
 *            socket. Tracing programs may use it from 5.11
 *            (bpf_sk_storage_tracing_allowed), on a socket pointer the kernel
 *            passed them; user space tries before setting cfg_owner_storage.
 *            Creating a record is the dearest step of a connection's
 *            tracing (it allocates), so only two kinds of socket get one: a
 *            socket the table refused, and a SO_REUSEPORT listener, whose
 *            connections the kernel spreads over the group's members (often
 *            one process each) while the table finds one member per address
 *            (find_listener_for()): the clone of the member's record is what
 *            names the process that will accept each connection.
 * Sockets made before tcptrace started are recorded by the iterator
 * (owners.bpf.c) from a socket-inode -> process table that user space builds
 * out of /proc/<pid>/fd.
 */
#ifndef OWNERS_BPF_H
#define OWNERS_BPF_H

#include "common.bpf.h"
#include "listeners.bpf.h"

#define TCP_LISTEN 10

struct owner {
	__u32 tgid;
	__u8 comm[TASK_COMM_LEN];
	/* The owner's cgroup (v2) when it made the socket: a container's
	 * events in softirq and timer context are named after it. */
	__u64 cgroup;
};

/* A connect() in progress: when it began (the connect detector's). Kept in
 * the socket's owner record, which the same state change writes: one table
 * write per connect() instead of two, and no delete when the connection is
 * made (the record goes when the socket closes). Read only while the socket
 * is in SYN_SENT; start_ns 0: unknown. */
struct conn_start {
	__u64 start_ns;
	__u64 last_ns; /* when the last SYN went out (the first: start_ns) */
	__u32 base;    /* tp->total_retrans at connect() */
	__u32 last;    /* tp->total_retrans at the last SYN retransmit seen */
};

/* A record of the owners' table. */
struct owner_rec {
	struct owner o;
	struct conn_start start;
};

/* bpf_sk_storage_get works in tp_btf programs (and in the iterator): set by
 * the loader after the verifier accepted a program that uses it
 * (probe_owner_storage*, owners.bpf.c). */
const volatile __u8 cfg_owner_storage = 0;
const volatile __u8 cfg_owner_storage_iter = 0;

/* BPF_F_CLONE: inet_csk_clone_lock() -> sk_clone_lock() copies the
 * listener's record into every passive connection it makes, before the
 * connection exists anywhere else: accept()ed sockets are the listener
 * owner's. NO_PREALLOC: required for socket storage. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct owner);
} owner_store SEC(".maps");

/* max_entries is set by user space from the host's socket count.
 * Preallocated: the tracing programs of kernels before 6.1 may not allocate
 * a hash element at run time. */
DEFINE_MAP(owners, BPF_MAP_TYPE_HASH, __u64, struct owner_rec, 65536); /* key: struct sock * */

#define OWNER_WAYS 4

/* A set of owner_sets. sk 0: a free way. The four addresses share a cache
 * line, which is all that a socket without a record (an accepted
 * connection, at its close) touches. check is sk ^ owner_mix() of the
 * record, written after it and cleared before the way is given up: a
 * reader that copied a record while its way changed hands finds the check
 * wrong and does not believe it. */
struct owner_set {
	__u64 sk[OWNER_WAYS];
	__u64 check[OWNER_WAYS];
	struct owner_rec rec[OWNER_WAYS];
};

/* max_entries (a power of two) and cfg_owner_set_shift (64 - its log2) are
 * set by user space: 1 set when the kernel has no BPF_CMPXCHG. */
DEFINE_MAP(owner_sets, BPF_MAP_TYPE_ARRAY, __u32, struct owner_set, 16384);
const volatile __u8 cfg_owner_sets = 0;
const volatile __u8 cfg_owner_set_shift = 50;

/* Records in owners while sets are in use (see above). */
__u64 owners_spilled = 0;

/* A socket's address as a number, for the set's index (addr_via()). */
DEFINE_MAP(owner_addr, BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, 1);

static __always_inline __u64 sock_addr(void *sk)
{
	__u32 zero = 0;
	__u64 *a = bpf_map_lookup_elem(&owner_addr, &zero);

	return a ? addr_via(a, (__u64)sk) : 0;
}

/* The set of the socket at addr. Fibonacci hashing: socket addresses are
 * slab objects a few KB apart, whose low bits repeat. */
static __always_inline struct owner_set *owner_set_of(__u64 addr)
{
	__u32 idx = (addr * 0x9E3779B97F4A7C15ULL) >> cfg_owner_set_shift;

	return bpf_map_lookup_elem(&owner_sets, &idx);
}

static __always_inline __u64 owner_mix(__u64 addr, const struct owner *o)
{
	__u64 comm;

	__builtin_memcpy(&comm, o->comm, sizeof(comm));
	return addr ^ ((__u64)o->tgid << 32) ^ o->cgroup ^ comm;
}

/* The way of the socket at addr in set s, OWNER_WAYS if none. */
static __always_inline __u32 set_way(const struct owner_set *s, __u64 addr)
{
	for (__u32 i = 0; i < OWNER_WAYS; i++)
		if (s->sk[i] == addr)
			return i;
	return OWNER_WAYS;
}

/* The record of the socket at addr in its set, in place; NULL if none. */
static __always_inline struct owner_rec *set_record(__u64 addr)
{
	struct owner_set *s = owner_set_of(addr);
	__u32 w;

	if (!s || !addr)
		return NULL;
	w = set_way(s, addr);
	return w < OWNER_WAYS ? &s->rec[w] : NULL;
}

/* A copy of the owner of the socket at addr from its set, if its check
 * holds. */
static __always_inline bool set_owner(__u64 addr, struct owner *out)
{
	struct owner_set *s = owner_set_of(addr);
	__u32 w;

	if (!s || !addr)
		return false;
	w = set_way(s, addr);
	if (w >= OWNER_WAYS)
		return false;
	__builtin_memcpy(out, &s->rec[w].o, sizeof(*out));
	return s->check[w] == owner_mix(addr, out);
}

/* r into the set of the socket at addr: over its record if it has one
 * (replace; else left as it is), else into a free way. False: the set is
 * full. */
static __always_inline bool set_put(__u64 addr, const struct owner_rec *r, bool replace)
{
	struct owner_set *s = owner_set_of(addr);
	__u32 w;

	if (!s || !addr)
		return false;
	w = set_way(s, addr);
	if (w < OWNER_WAYS && !replace)
		return true;
	if (w >= OWNER_WAYS)
		for (__u32 i = 0; i < OWNER_WAYS; i++)
			if (!s->sk[i] && __sync_val_compare_and_swap(&s->sk[i], 0, addr) == 0) {
				w = i;
				break;
			}
	if (w >= OWNER_WAYS)
		return false;
	s->check[w] = 0;
	__builtin_memcpy(&s->rec[w], r, sizeof(*r));
	s->check[w] = owner_mix(addr, &r->o);
	return true;
}

/* The socket at addr's record out of its set (every way that names it: an
 * iterator and the tracepoint may both have written one). */
static __always_inline void set_drop(__u64 addr)
{
	struct owner_set *s = owner_set_of(addr);

	if (!s || !addr)
		return;
	for (__u32 i = 0; i < OWNER_WAYS; i++)
		if (s->sk[i] == addr) {
			s->check[i] = 0;
			s->sk[i] = 0;
		}
}

/* Whether the hash may hold the socket's record: always, without sets. */
static __always_inline bool owners_hashed(void)
{
	return !cfg_owner_sets || owners_spilled;
}

/* The record of the socket at addr, in place; NULL if none. */
static __always_inline struct owner_rec *owner_record(__u64 addr)
{
	struct owner_rec *r = cfg_owner_sets ? set_record(addr) : NULL;

	if (r || !owners_hashed())
		return r;
	return bpf_map_lookup_elem(&owners, &addr);
}

/* A copy of the owner of the socket at addr (its own record only). */
static __always_inline bool owner_of_addr(__u64 addr, struct owner *out)
{
	struct owner *o;

	if (cfg_owner_sets && set_owner(addr, out))
		return true;
	if (!owners_hashed())
		return false;
	o = bpf_map_lookup_elem(&owners, &addr);
	if (!o)
		return false;
	__builtin_memcpy(out, o, sizeof(*out));
	return true;
}

/* r as the record of the socket at addr: in its set, else in the hash
 * (flags BPF_ANY or BPF_NOEXIST, as for bpf_map_update_elem). 0, or the
 * hash's refusal. */
static __always_inline long owner_put(__u64 addr, const struct owner_rec *r, __u64 flags)
{
	long err;

	if (!cfg_owner_sets)
		return bpf_map_update_elem(&owners, &addr, r, flags);
	if (set_put(addr, r, flags != BPF_NOEXIST))
		return 0;
	err = bpf_map_update_elem(&owners, &addr, r, BPF_NOEXIST);
	if (!err) {
		__sync_fetch_and_add(&owners_spilled, 1);
		return 0;
	}
	if (err == -EEXIST && flags != BPF_NOEXIST)
		return bpf_map_update_elem(&owners, &addr, r, BPF_EXIST);
	return err;
}

/* The socket at addr's record gone, wherever it is. Most sockets that end
 * have none (accepted connections): a lookup is cheaper than a delete,
 * which takes the bucket's lock. */
static __always_inline void owner_drop(__u64 addr)
{
	if (cfg_owner_sets)
		set_drop(addr);
	if (!owners_hashed() || !bpf_map_lookup_elem(&owners, &addr))
		return;
	if (!bpf_map_delete_elem(&owners, &addr) && cfg_owner_sets)
		__sync_fetch_and_add(&owners_spilled, -1);
}

/* Events whose socket had no known owner (enum owner_unknown), per CPU:
 * the summary reports them. */
enum owner_unknown {
	OWNER_UNKNOWN_REPORTED = 0, /* reported with owner_known false */
	OWNER_UNKNOWN_FILTERED = 1, /* left out by --pid: whose they were is unknown */
	OWNER_UNKNOWN_MAX,
};

DEFINE_COUNTERS(owner_unknown, OWNER_UNKNOWN_MAX);

/* Filled by user space before the iterator runs: socket inode -> owner. */
DEFINE_MAP(inode_owners, BPF_MAP_TYPE_HASH, __u32, struct owner, 65536);

/* The listener that made sk if sk is a passive connection, else NULL: the
 * listener the kernel would hand a SYN to sk's local address and port. An
 * active connection never shares its port with a listener unless it was
 * bound to it explicitly: connect()'s port search skips ports that bind()
 * holds (__inet_hash_connect()). */
static __always_inline struct sock *passive_listener(struct sock *sk)
{
	__u8 addr[16] = {};
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family == AF_INET6)
		BPF_CORE_READ_INTO(&addr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__u32 *)addr, sk, __sk_common.skc_rcv_saddr);
	return find_listener_for(sk_netns(sk), family, addr, BPF_CORE_READ(sk, __sk_common.skc_num));
}

/* Whether every member of l's SO_REUSEPORT group is tgid's (the threads of
 * one process share a group; pre-forked workers each have a member): the
 * table cannot tell which member a connection came from, so a passive
 * connection of a group of several processes has no owner there rather than
 * a wrong one. */
static __always_inline bool group_owned_by(struct sock *l, __u32 tgid)
{
	struct owner o;
	struct sock *m;

	for (__u32 i = 0; i < REUSEPORT_SCAN; i++) {
		m = reuseport_member(l, i);
		if (!m)
			return true;
		if (!owner_of_addr(sock_addr(m), &o) || o.tgid != tgid)
			return false;
	}
	return !reuseport_member(l, REUSEPORT_SCAN);
}

/*
 * The owner of sk from the table: its own record, else, for a passive
 * connection, its listener's (accept() runs in the listener owner's
 * process). sk may be any socket address (from a map, a kprobe's
 * registers). Out of line: its callers are many and the listener search is
 * long.
 */
static __noinline bool table_owner(struct sock *sk, struct owner *out)
{
	struct sock *l;

	if (owner_of_addr(sock_addr(sk), out))
		return true;
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_LISTEN)
		return false;
	l = passive_listener(sk);
	if (!l || !owner_of_addr(sock_addr(l), out))
		return false;
	return !is_reuseport(l) || group_owned_by(l, out->tgid);
}

/* A known owner o into the event's pid, comm and cgroup; an unknown one
 * (known false) is counted. Returns known. */
static __always_inline bool owner_into(struct event *e, const struct owner *o, bool known)
{
	if (!known) {
		counter_inc(&owner_unknown, OWNER_UNKNOWN_REPORTED);
		return false;
	}
	e->pid = o->tgid;
	__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
	e->cgroup = o->cgroup;
	return true;
}

/* The owner of sk into the event's pid and comm; false if unknown. sk may
 * be any socket address (from a map, a kprobe's registers). */
static __always_inline bool fill_owner(struct event *e, struct sock *sk)
{
	struct owner o;

	return owner_into(e, &o, table_owner(sk, &o));
}

/* --pid for events outside process context: by the socket's owner. A socket
 * whose owner is unknown is left out when a filter is set. */
static __always_inline bool owner_wanted(struct sock *sk)
{
	struct owner o;

	if (!who_filtered())
		return true;
	if (!table_owner(sk, &o)) {
		counter_inc(&owner_unknown, OWNER_UNKNOWN_FILTERED);
		return false;
	}
	return who_wanted(o.tgid, o.cgroup);
}

/*
 * The owner of sk, a socket the kernel passed to a tp_btf, fentry or fexit
 * program (bpf_sk_storage_get takes no other pointer): its own storage,
 * else the table (table_owner()). in_task says the event happens in a
 * system call on the socket (a close() that aborts it): its caller is then
 * the owner when neither knows it (a kernel without the storage and a full
 * table). False: unknown.
 */
static __always_inline bool sock_owner(struct sock *sk, bool in_task, struct owner *out)
{
	struct owner *o = NULL;

	if (cfg_owner_storage)
		o = bpf_sk_storage_get(&owner_store, sk, NULL, 0);
	if (o) {
		__builtin_memcpy(out, o, sizeof(*out));
		return true;
	}
	if (table_owner(sk, out))
		return true;
	if (!in_task)
		return false;
	out->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(&out->comm, sizeof(out->comm));
	out->cgroup = bpf_get_current_cgroup_id();
	return true;
}

/* fill_owner and owner_wanted for such a socket. */
static __always_inline bool fill_sock_owner(struct event *e, struct sock *sk, bool in_task)
{
	struct owner o;

	return owner_into(e, &o, sock_owner(sk, in_task, &o));
}

static __always_inline bool sock_owner_wanted(struct sock *sk, bool in_task)
{
	struct owner o;

	if (!who_filtered())
		return true;
	if (!sock_owner(sk, in_task, &o)) {
		counter_inc(&owner_unknown, OWNER_UNKNOWN_FILTERED);
		return false;
	}
	return who_wanted(o.tgid, o.cgroup);
}

/* A connect() starting now on sk. */
static __always_inline void conn_start_now(struct sock *sk, struct conn_start *cs)
{
	cs->start_ns = bpf_ktime_get_ns();
	cs->last_ns = cs->start_ns;
	cs->base = BPF_CORE_READ((struct tcp_sock *)sk, total_retrans);
	cs->last = cs->base;
}

/* The connect() start kept in sk's owner record; NULL when unknown (the
 * table was full, or the connect() began before tcptrace). */
static __always_inline struct conn_start *conn_start_of(struct sock *sk)
{
	struct owner_rec *r = owner_record(sock_addr(sk));

	return r && r->start.start_ns ? &r->start : NULL;
}

/* The calling process as sk's owner: in the table, with the connect()
 * start when `connecting`, and in the socket's storage too when `storage`
 * (a SO_REUSEPORT listener) or when the table refused the record. Any
 * refusal, not only -E2BIG: a full table answered otherwise on 6.1 (the e2e
 * test TestOwnersTableFull failed there on -E2BIG alone), and whatever the
 * reason the table does not have the owner. */
static __always_inline void set_sock_owner_current(struct sock *sk, bool storage, bool connecting)
{
	struct owner_rec r = { .o.tgid = bpf_get_current_pid_tgid() >> 32 };
	struct owner *s;

	bpf_get_current_comm(&r.o.comm, sizeof(r.o.comm));
	r.o.cgroup = bpf_get_current_cgroup_id();
	if (connecting)
		conn_start_now(sk, &r.start);
	if (owner_put(sock_addr(sk), &r, BPF_ANY))
		storage = true;
	if (!cfg_owner_storage || !storage)
		return;
	s = bpf_sk_storage_get(&owner_store, sk, NULL, BPF_SK_STORAGE_GET_F_CREATE);
	if (s)
		__builtin_memcpy(s, &r.o, sizeof(*s));
}

/*
 * sock:inet_sock_set_state fires on every TCP state change, in the context
 * that made it. Two changes name an owner:
 *  - to LISTEN: listen() runs in the owner's process;
 *  - to SYN_SENT: connect() runs in the owner's process.
 * A passive connection (LISTEN to SYN_RECV: inet_csk_clone_lock() copies
 * the listener, state included, then sets SYN_RECV, in softirq) gets no
 * record: it is its listener's (table_owner()), and the kernel copied the
 * listener's storage record, if it has one, into it (BPF_F_CLONE). Timer
 * and softirq events of connections (delayed ACKs, SYN retransmits) are
 * attributed through these records. Every other state change of every
 * connection on the host leaves after a few compares.
 */
static __shared_hook void owner_set_state(struct sock *sk, int oldstate, int newstate, bool connect_starts)
{
	struct listener_key lk;
	__u64 key = (__u64)sk;
	__u64 *cur;

	if (newstate == TCP_SYN_SENT) {
		if (sk->sk_protocol == IPPROTO_TCP)
			set_sock_owner_current(sk, false, connect_starts);
		return;
	}
	if ((newstate != TCP_LISTEN && oldstate != TCP_LISTEN) || newstate == TCP_SYN_RECV)
		return;
	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	listener_key_of(sk, &lk);
	if (newstate == TCP_LISTEN) {
		set_sock_owner_current(sk, is_reuseport(sk), false);
		bpf_map_update_elem(&listeners, &lk, &key, BPF_ANY);
		return;
	}
	cur = bpf_map_lookup_elem(&listeners, &lk);
	if (cur && *cur == key) {
		/* The group's other members stay behind the same key: the
		 * trace fires before the kernel unhashes the socket, so the
		 * group still lists them. */
		struct sock *m = NULL;

		for (__u32 i = 0; i < REUSEPORT_SCAN; i++) {
			m = reuseport_member(sk, i);
			if (!m || m != sk)
				break;
		}
		if (m && m != sk) {
			__u64 other = (__u64)m;

			bpf_map_update_elem(&listeners, &lk, &other, BPF_ANY);
		} else
			bpf_map_delete_elem(&listeners, &lk);
	}
}

/*
 * A full socket ends in CLOSE whatever its path (tcp_done(), tcp_close(),
 * tcp_disconnect(), a listener's close): its table record goes with it, so
 * the table holds live sockets only and a host that churns connections does
 * not fill it. Run after every
 * detector's handler of the same change, which may still read the owner
 * (connect_timeout at SYN_SENT -> CLOSE). A reset that close() sends after
 * setting CLOSE is named by the calling task (sock_owner()); the socket's
 * storage record lives until the socket is freed.
 */
static __shared_hook void owner_forget(struct sock *sk, int newstate)
{
	if (newstate == TCP_CLOSE)
		owner_drop(sock_addr(sk));
}

#endif /* OWNERS_BPF_H */
