package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

const (
	mibBaselineProg  = "mib_baseline_init"
	mibKnownNetsProg = "mib_known_nets"
)

// takeMibBaselines gives the tracepoint path of the SYN detector a baseline
// of every CPU's counters in every network namespace, just after its
// programs are attached. That path judges a SYN by how this CPU's counters
// moved since the previous SYN it saw there; without a baseline the first
// SYN a CPU handles in a namespace could only be judged by the listener's
// state, which cannot tell a cookie from the SYN's own request at a SYN
// queue at its limit.
//
// BPF cannot read another CPU's counters without per-CPU offsets it has no
// helper for, so the program runs on each CPU in turn: the thread pins itself
// there and runs it with BPF_PROG_TEST_RUN (in the calling thread's context
// when the CPU is the caller's). It finds the namespace through a socket the
// thread made in it. CPUs this process may not run on (a cpuset) are left
// to the listener's state.
//
// First, the kernel's list of namespaces is copied (mib_known_nets): a
// namespace not on it was made later and starts from zero. Only a walk of
// the whole list can say so: a walk of /proc misses namespaces no process
// is in, and the kernel's namespace cookies are not in creation order.
func takeMibBaselines(spec *ebpf.CollectionSpec, o *objects, pids []uint32) (taken int, err error) {
	coll, err := ebpf.NewCollectionWithOptions(withPrograms(spec, mibBaselineProg, mibKnownNetsProg),
		ebpf.CollectionOptions{MapReplacements: o.maps.Maps, Cache: o.kernelBTF})
	if err != nil {
		return 0, fmt.Errorf("loading %s: %w", mibBaselineProg, explainLoad(err))
	}
	defer coll.Close()
	var errs []error
	if ret, err := coll.Programs[mibKnownNetsProg].Run(&ebpf.RunOptions{}); err != nil || ret != 1 {
		errs = append(errs, fmt.Errorf("the kernel's list of network namespaces was not read whole (%d, %v): the first SYN a CPU handles in a namespace made later is judged by the listener's state", ret, err))
	}
	prog := coll.Programs[mibBaselineProg]
	for _, path := range netnsPathsOf(pids) {
		err := inNetns(path, func() error {
			n, err := baselinesHere(prog)
			taken += n
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		}
	}
	return taken, errors.Join(errs...)
}

// baselinesHere runs prog on every CPU this thread may use, for the
// namespace the thread is in. The thread is inNetns's own and is thrown
// away afterwards, with the affinity it was left with.
func baselinesHere(prog *ebpf.Program) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("a socket in the namespace: %w", err)
	}
	defer unix.Close(fd)
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return 0, err
	}
	taken := 0
	for cpu := 0; cpu < len(allowed)*64; cpu++ {
		if !allowed.IsSet(cpu) {
			continue
		}
		var one unix.CPUSet
		one.Set(cpu)
		if err := unix.SchedSetaffinity(0, &one); err != nil {
			continue
		}
		ret, err := prog.Run(&ebpf.RunOptions{Context: []uint64{uint64(fd)}, CPU: uint32(cpu), Flags: unix.BPF_F_TEST_RUN_ON_CPU})
		if err != nil {
			return taken, fmt.Errorf("running %s on CPU %d: %w", mibBaselineProg, cpu, err)
		}
		if ret == 1 {
			taken++
		}
	}
	return taken, nil
}
