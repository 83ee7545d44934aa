package tracer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
)

type procOwner struct {
	pid    uint32
	comm   string
	cgroup string // its cgroup v2 path
}

// scanSockets maps every socket inode to the process holding it, from
// /proc/<pid>/fd. With pids, only those processes are read.
func scanSockets(pids []uint32) map[uint32]procOwner {
	out := map[uint32]procOwner{}
	var dirs []string
	if len(pids) > 0 {
		for _, p := range pids {
			dirs = append(dirs, strconv.Itoa(int(p)))
		}
	} else {
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			if _, err := strconv.Atoi(e.Name()); err == nil {
				dirs = append(dirs, e.Name())
			}
		}
	}
	for _, d := range dirs {
		pid, _ := strconv.Atoi(d)
		fds, err := os.ReadDir(filepath.Join("/proc", d, "fd"))
		if err != nil {
			continue // exited, or a kernel thread
		}
		comm, cgroup := "", ""
		for _, fd := range fds {
			target, err := os.Readlink(filepath.Join("/proc", d, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 32)
			if err != nil {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile(filepath.Join("/proc", d, "comm"))
				comm = strings.TrimSpace(string(b))
				cgroup = procCgroup(uint32(pid))
			}
			if _, seen := out[uint32(ino)]; !seen {
				out[uint32(ino)] = procOwner{pid: uint32(pid), comm: comm, cgroup: cgroup}
			}
		}
	}
	return out
}

// inodeOwners resolves a socket inode in user space when the kernel did not
// know the owner: a listener made before tcptrace started in a namespace
// nobody's iterator reached, for instance. A miss rescans /proc at most once
// a second.
type inodeOwners struct {
	mu       sync.Mutex
	byInode  map[uint32]procOwner
	scanned  time.Time
	pids     []uint32
	interval time.Duration
}

func newInodeOwners(pids []uint32) *inodeOwners {
	return &inodeOwners{byInode: map[uint32]procOwner{}, pids: pids, interval: time.Second}
}

func (o *inodeOwners) lookup(ino uint32) procOwner {
	if ino == 0 {
		return procOwner{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, ok := o.byInode[ino]; ok {
		return p
	}
	if time.Since(o.scanned) < o.interval {
		return procOwner{}
	}
	o.scanned = time.Now()
	o.byInode = scanSockets(o.pids)
	return o.byInode[ino]
}

// learnExistingSockets tells the kernel side who owns the sockets that were
// made before tcptrace started, and where the listeners are: it fills the
// inode -> owner table from /proc, then runs the iter/tcp program once in
// every network namespace (an iterator walks the namespace of its reader).
func learnExistingSockets(prog *ebpf.Program, inodeMap *ebpf.Map, pids []uint32) error {
	cg := newCgroups()
	for ino, p := range scanSockets(pids) {
		v := tcptraceOwner{Tgid: p.pid, Cgroup: cg.idOf(p.cgroup)}
		copy(v.Comm[:], p.comm)
		if err := inodeMap.Put(ino, &v); err != nil {
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				continue
			}
			break // table full: the rest are resolved in user space
		}
	}
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		return fmt.Errorf("attaching the socket iterator: %w", err)
	}
	defer it.Close()
	var errs []error
	for _, path := range netnsPathsOf(pids) {
		if err := readIterIn(it, path); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	return errors.Join(errs...)
}

// readIterIn reads the iterator from inside the namespace at path.
func readIterIn(it *link.Iter, path string) error {
	return inNetns(path, func() error {
		r, err := it.Open()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, r)
		r.Close()
		return err
	})
}

// Socket owners are kept in tables keyed by the socket's address whose size
// is fixed at load time: sets of ownerWays records (owner_sets) where the
// kernel has BPF_CMPXCHG (5.12+), a hash table (owners) for the records of a
// full set and for every record on older kernels, and, where tracing
// programs may use it (5.11+), the socket's own storage for the sockets the
// hash refuses when full (bpf/owners.bpf.h).
const (
	// ownersFloor is the table's size on a host with few sockets.
	ownersFloor = 65536
	// ownersHeadroom: the table holds this many times the TCP sockets the
	// host has at start, for the ones made while tcptrace runs.
	ownersHeadroom = 2
	// ownersCeiling bounds the table's memory, allocated at load (about
	// 330 MiB here: ownersSizes).
	ownersCeiling = 1 << 22
	// ownerWays: records in a set (OWNER_WAYS).
	ownerWays = 4
)

// prepareOwners sets, before the maps are made, where socket owners are
// kept: cfg_owner_storage and cfg_owner_storage_iter say whether the kernel
// let a tp_btf program and an iterator use socket storage, cfg_owner_sets
// whether it has BPF_CMPXCHG (each found by loading a program that uses
// it), and the tables get sizes from the host's socket count.
func prepareOwners(spec *ebpf.CollectionSpec, v *tcptraceVariableSpecs, kernelBTF *btf.Cache) error {
	var m tcptraceMapSpecs
	if err := spec.Assign(&m); err != nil {
		return err
	}
	sets := loadOwnerProbe(spec, m.OwnerSets, "probe_owner_sets", kernelBTF) == nil
	size := ownersSizes(ownersTableSize(tcpSocketsAllocated()), sets)
	err := set(setting{v.CfgOwnerStorage, boolByte(loadOwnerProbe(spec, m.OwnerStore, "probe_owner_storage", kernelBTF) == nil)},
		setting{v.CfgOwnerStorageIter, boolByte(loadOwnerProbe(spec, m.OwnerStore, "probe_owner_storage_iter", kernelBTF) == nil)},
		setting{v.CfgOwnerSets, boolByte(sets)},
		setting{v.CfgOwnerSetShift, size.shift})
	if err != nil {
		return err
	}
	m.Owners.MaxEntries = size.hash
	m.OwnerSets.MaxEntries = size.sets
	if !sets {
		withoutCmpxchg(spec)
	}
	return nil
}

// withoutCmpxchg: a kernel without BPF_CMPXCHG (5.10) refuses a program that
// holds one anywhere, reachable or not: its verifier checks every
// instruction's reserved fields before it walks the program
// (resolve_pseudo_ldimm64()). The owner sets' claims are the only ones, each
// behind cfg_owner_sets, which is 0 there: each becomes r0 = -1 (the result
// register of BPF_CMPXCHG), a claim that finds its way taken were it ever
// reached. One instruction for one, so no jump moves. Returns how many.
func withoutCmpxchg(spec *ebpf.CollectionSpec) int {
	n := 0
	for _, p := range spec.Programs {
		for i, ins := range p.Instructions {
			if ins.OpCode.AtomicOp() != asm.CmpXchg {
				continue
			}
			mov := asm.Mov.Imm(asm.R0, -1)
			mov.Metadata = ins.Metadata
			p.Instructions[i] = mov
			n++
		}
	}
	return n
}

// ownerSizes: how many sets, the shift that takes a hashed address to one
// (64 - log2 sets) and how many records the hash holds.
type ownerSizes struct {
	sets  uint32
	shift uint8
	hash  uint32
}

// ownersSizes shares a table of records between sets and the hash. With sets
// (a power of two of them, at least records/ownerWays), the hash holds what
// full sets spill: an eighth of the records. Sets of four filled with
// addresses a good hash spreads spill about 4% of their records at half
// load, a tenth at 70% (the share above four of a Poisson count per set);
// live records are listening and connecting sockets, seldom half of the
// host's. The memory is what one hash of every record took: 72 bytes a
// record in the sets and 80 per hash element, an eighth as many. Without
// sets, one set that nothing uses and the hash holds all.
func ownersSizes(records uint32, sets bool) ownerSizes {
	if !sets {
		return ownerSizes{sets: 1, shift: 63, hash: records}
	}
	n := uint32(1)
	shift := uint8(64)
	for n*ownerWays < records {
		n <<= 1
		shift--
	}
	return ownerSizes{sets: n, shift: shift, hash: records / 8}
}

// loadOwnerProbe loads one of the programs that only try what the kernel
// lets them do, with the one map it uses.
func loadOwnerProbe(spec *ebpf.CollectionSpec, m *ebpf.MapSpec, prog string, kernelBTF *btf.Cache) error {
	s := withPrograms(spec, prog)
	s.Maps = map[string]*ebpf.MapSpec{m.Name: m}
	s.Variables = nil
	c, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{Cache: kernelBTF})
	if err != nil {
		return err
	}
	c.Close()
	return nil
}

func ownersTableSize(sockets uint64) uint32 {
	n := sockets * ownersHeadroom
	if n < ownersFloor {
		return ownersFloor
	}
	if n > ownersCeiling {
		return ownersCeiling
	}
	return uint32(n)
}

// tcpSocketsAllocated is the host's TCP sockets (all namespaces: the
// counter behind "alloc" in /proc/net/sockstat's TCP line is tcp_prot's,
// shared by IPv4 and IPv6 and by every namespace), 0 if unreadable.
func tcpSocketsAllocated() uint64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	n, _ := parseSockstatAlloc(string(b))
	return n
}

func parseSockstatAlloc(sockstat string) (uint64, bool) {
	for _, line := range strings.Split(sockstat, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "TCP:" {
			continue
		}
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "alloc" {
				n, err := strconv.ParseUint(f[i+1], 10, 64)
				return n, err == nil
			}
		}
	}
	return 0, false
}

// ownerStorageNote says, when the kernel keeps no owner in the sockets
// themselves, what that means for this run; nil otherwise.
func ownerStorageNote(o *objects) error {
	var on uint8
	if o.v.CfgOwnerStorage.Get(&on) == nil && on != 0 {
		return nil
	}
	return fmt.Errorf("this kernel does not let tracing programs use socket storage (5.11+): owners are kept in a table of %d sockets; past that, newer sockets' owners are unknown (counted in the summary)", o.m.Owners.MaxEntries())
}

// Indexes of the owner_unknown counters (enum owner_unknown in
// bpf/owners.bpf.h).
const (
	ownerUnknownReported = 0
	ownerUnknownFiltered = 1
)

// OwnerCounts is how many events had a socket whose owner tcptrace did not
// know.
type OwnerCounts struct {
	// Reported: events printed with owner_known false.
	Reported uint64
	// Filtered: events --pid left out, as it could not tell whose they were.
	Filtered uint64
}

// OwnersUnknown reads the counts; zero if they cannot be read.
func (t *Tracer) OwnersUnknown() OwnerCounts {
	var c OwnerCounts
	m := t.objs.m.OwnerUnknown
	if m == nil {
		return c
	}
	sum := func(i uint32) uint64 {
		var per []uint64
		var n uint64
		if m.Lookup(i, &per) == nil {
			for _, v := range per {
				n += v
			}
		}
		return n
	}
	c.Reported, c.Filtered = sum(ownerUnknownReported), sum(ownerUnknownFiltered)
	return c
}

// WriteOwnersUnknown adds the counts to the summary; nothing when both are 0.
func WriteOwnersUnknown(w io.Writer, c OwnerCounts) {
	if c.Reported == 0 && c.Filtered == 0 {
		return
	}
	fmt.Fprintf(w, "  owner unknown: %d events (%d printed with owner_known false, %d left out by --pid, which could not tell whose they were)\n", c.Reported+c.Filtered, c.Reported, c.Filtered)
}

// ownerTracking is what the detectors that need socket owners load besides
// their own hooks: who owns each socket, and where the listeners are
// (bpf/owners.bpf.h).
var ownerTracking = pathSpec{path: PathTracepoint, hooks: "tp_btf/inet_sock_set_state", progs: attach("tp_inet_sock_set_state"), enable: hookOwners}

const ownerIterProg = "iter_tcp_owners"
