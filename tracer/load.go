package tracer

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// objects is everything tcptrace holds in the kernel. Maps are created once
// and shared by every program (MapReplacements), so that each path's
// programs can be loaded on their own: loading the fentry programs on a
// kernel that refuses them must not stop the tracepoint ones.
type objects struct {
	// kernelBTF is the kernel's BTF, decoded once for every load and every
	// fact read from it: decoding /sys/kernel/btf/vmlinux costs about 20 ms
	// of CPU, which each ebpf.NewCollection without a shared cache pays
	// again. Dropped once loading is done (New), so the memory goes with it.
	kernelBTF *btf.Cache
	maps      *ebpf.Collection // every map of the object, no programs
	// m and v are maps's maps and variables, by field (typed).
	m tcptraceMaps
	v tcptraceVariables
	// attached: programs in place, by name. A program shared by several
	// detectors (enum shared_hook) is attached once.
	attached map[string]bool
	// hooks: the bits of hooks_on set so far.
	hooks uint32
	progs []*ebpf.Collection // one per path in use
	links []progLink
}

// progLink is an attachment and the program it runs.
type progLink struct {
	prog string
	link.Link
}

// closeLinks detaches every program; the maps stay readable.
func (o *objects) closeLinks() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	return errors.Join(errs...)
}

func (o *objects) close() error {
	// Links first: once they are gone no program runs, and nothing is
	// written to the maps that are closed after them.
	errs := []error{o.closeLinks()}
	for _, c := range o.progs {
		c.Close()
	}
	o.progs = nil
	if o.maps != nil {
		o.maps.Close()
		o.maps = nil
	}
	return errors.Join(errs...)
}

// typed fills m and v: the objects of maps, by field. Assign takes what it
// fills out of the collection it is given, so it is given a copy: maps
// keeps every map, for the programs loaded later (MapReplacements), and
// closes them.
func (o *objects) typed() error {
	c := &ebpf.Collection{Maps: maps.Clone(o.maps.Maps), Variables: maps.Clone(o.maps.Variables)}
	if err := c.Assign(&o.m); err != nil {
		return err
	}
	return c.Assign(&o.v)
}

// skippedRuns is, per program, how many times the kernel did not run it on
// a hit of its hook. Each one is an event tcptrace may have missed.
//   - Tracing programs (tp_btf, fentry/fexit) have a recursion guard per
//     program and CPU: the same program already running there, its hook
//     fired again from an interrupt. Counted (recursion_misses) from 5.12.
//   - Kprobe programs share one guard per CPU, bpf_prog_active: any kprobe
//     program running there, or a bpf() map lookup/update/delete in progress
//     there (the syscall holds the guard so that a kprobe cannot deadlock on
//     a map's lock), stops them all. trace_call_bpf() counts these from 6.7.
//   - The kprobe itself drops a hit while another kprobe is being handled on
//     that CPU (nmissed, in the link's info from 6.7: kprobeMissed, read
//     before the links are closed).
func (o *objects) skippedRuns(kprobeMissed map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for _, c := range o.progs {
		for name, p := range c.Programs {
			if st, err := p.Stats(); err == nil && st.RecursionMisses > 0 {
				out[name] += st.RecursionMisses
			}
		}
	}
	for name, n := range kprobeMissed {
		out[name] += n
	}
	return out
}

// kprobeMissed is, per program, the hits its kprobe missed. Links made by
// perf_event ioctls (kernels before 5.15) and kernels before 6.7 have no
// such count: nothing is read from them.
func (o *objects) kprobeMissed() map[string]uint64 {
	out := map[string]uint64{}
	for _, l := range o.links {
		info, err := l.Info()
		if err != nil {
			continue
		}
		if pe := info.PerfEvent(); pe != nil {
			if kp := pe.Kprobe(); kp != nil && kp.Missed > 0 {
				out[l.prog] += kp.Missed
			}
		}
	}
	return out
}

// loadSpec returns the compiled object with the run's configuration set,
// and its variables by field.
func loadSpec(opts *Options) (*ebpf.CollectionSpec, *tcptraceVariableSpecs, error) {
	spec, err := loadTcptrace()
	if err != nil {
		return nil, nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	var v tcptraceVariableSpecs
	if err := spec.Assign(&v); err != nil {
		return nil, nil, fmt.Errorf("reading the embedded BPF object: %w", err)
	}
	family := uint16(0)
	switch opts.Family {
	case 4:
		family = unix.AF_INET
	case 6:
		family = unix.AF_INET6
	}
	err = set(append(detectorSettings(opts.Events, &v),
		setting{v.CfgFilterPid, boolByte(len(opts.PIDs) > 0)},
		setting{v.CfgFilterCgroup, boolByte(len(opts.Cgroups) > 0)},
		setting{v.CfgPort, opts.Port},
		setting{v.CfgFamily, family},
		setting{v.CfgSnapshotNs, uint64(snapshotRefresh(opts.Interval))},
	)...)
	if err != nil {
		return nil, nil, err
	}
	return spec, &v, nil
}

// setting is a value for one of the object's variables.
type setting struct {
	v     *ebpf.VariableSpec
	value any
}

func set(settings ...setting) error {
	for _, s := range settings {
		if err := s.v.Set(s.value); err != nil {
			return fmt.Errorf("setting %s: %w", s.v.Name, err)
		}
	}
	return nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// withPrograms is spec with only the named programs, sharing everything
// else: the loader copies what it changes (a ProgramSpec before relocating
// it), and copying all of the object's programs for every load cost 8 MB of
// allocations at start-up.
func withPrograms(spec *ebpf.CollectionSpec, names ...string) *ebpf.CollectionSpec {
	s := *spec
	s.Programs = make(map[string]*ebpf.ProgramSpec, len(names))
	for _, n := range names {
		s.Programs[n] = spec.Programs[n]
	}
	return &s
}

// createMaps makes every map once, before any program.
func createMaps(spec *ebpf.CollectionSpec, v *tcptraceVariableSpecs, kernelBTF *btf.Cache) (*ebpf.Collection, error) {
	if err := prepareOwners(spec, v, kernelBTF); err != nil {
		return nil, err
	}
	c, err := ebpf.NewCollectionWithOptions(withPrograms(spec), ebpf.CollectionOptions{Cache: kernelBTF})
	if err != nil {
		return nil, fmt.Errorf("creating BPF maps: %w", explainLoad(err))
	}
	return c, nil
}

// loadPath loads and attaches one path's programs into o, or nothing.
// Programs in o.attached (shared with a detector loaded before) are in place
// already.
func loadPath(spec *ebpf.CollectionSpec, o *objects, p *pathSpec) error {
	s := withPrograms(spec)
	var todo []progAttach
	for _, pa := range p.progs {
		ps, ok := spec.Programs[pa.prog]
		if !ok {
			return fmt.Errorf("BPF object has no program %s", pa.prog)
		}
		if o.attached[pa.prog] {
			continue
		}
		s.Programs[pa.prog] = ps
		todo = append(todo, pa)
	}
	if len(todo) == 0 {
		return nil
	}
	coll, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: o.maps.Maps, Cache: o.kernelBTF})
	if err != nil {
		return explainLoad(err)
	}
	var links []progLink
	fail := func(err error) error {
		for _, l := range links {
			l.Close()
		}
		coll.Close()
		return err
	}
	for _, pa := range todo {
		prog := coll.Programs[pa.prog]
		var l link.Link
		switch pa.kind {
		case attachTracing:
			l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		case attachKprobe:
			l, err = link.Kprobe(pa.symbol, prog, nil)
		case attachKretprobe:
			l, err = link.Kretprobe(pa.symbol, prog, nil)
		}
		if err != nil {
			return fail(fmt.Errorf("attaching %s: %w", pa.prog, explainAttach(err)))
		}
		links = append(links, progLink{pa.prog, l})
	}
	o.progs = append(o.progs, coll)
	o.links = append(o.links, links...)
	for _, pa := range todo {
		o.attached[pa.prog] = true
	}
	return nil
}

// pathLoader is what attachAll needs from the kernel: load and attach a
// path's programs (all or none), and turn shared programs on.
type pathLoader interface {
	loadPath(p *pathSpec) error
	setHooks(bits uint32) error
}

// kernelLoader loads into the kernel, sharing o's maps.
type kernelLoader struct {
	spec *ebpf.CollectionSpec
	o    *objects
}

func (k kernelLoader) loadPath(p *pathSpec) error { return loadPath(k.spec, k.o, p) }
func (k kernelLoader) setHooks(bits uint32) error { return setHooks(k.o, bits) }

// attachAll picks a path for every wanted set of programs. A set no path
// supports is reported in its ProbeStatus and skipped; the others go on.
func attachAll(l pathLoader, dets []*detector, events []EventType, force ProbePath, facts *kernelFacts) []ProbeStatus {
	var (
		out    []ProbeStatus
		shared []int // indexes in out of sets whose path shares programs
		hooks  uint32
	)
	for _, det := range dets {
		for _, set := range det.probes {
			if !wantsAny(events, set.events) {
				continue
			}
			st := attachSet(l, set, force, facts)
			if st.using != nil && st.using.enable != 0 {
				hooks |= st.using.enable
				shared = append(shared, len(out))
			}
			out = append(out, st)
		}
	}
	if err := l.setHooks(hooks); err != nil {
		// The shared programs would do nothing for them: say so on every
		// set that relies on them.
		for _, i := range shared {
			out[i].Tried = append(out[i].Tried, PathFailure{Path: out[i].Path, Hooks: out[i].Hooks, Err: err})
			out[i].Path, out[i].using = 0, nil
		}
	}
	return out
}

// attachSet loads the first of the set's paths that the kernel takes (only
// the forced one, if any).
func attachSet(l pathLoader, set probeSet, force ProbePath, facts *kernelFacts) ProbeStatus {
	st := ProbeStatus{Events: set.events}
	for i := range set.paths {
		p := &set.paths[i]
		if force != 0 && p.path != force {
			continue
		}
		if p.requires != nil {
			if err := p.requires(facts); err != nil {
				st.Tried = append(st.Tried, PathFailure{Path: p.path, Hooks: p.hooks, Err: err, Unsupported: true})
				continue
			}
		}
		if err := l.loadPath(p); err != nil {
			st.Tried = append(st.Tried, PathFailure{Path: p.path, Hooks: p.hooks, Err: err, Unsupported: errors.Is(err, errUnsupported)})
			continue
		}
		st.Path, st.Hooks, st.using = p.path, p.hooks, p
		return st
	}
	if force != 0 && len(st.Tried) == 0 {
		st.Tried = append(st.Tried, PathFailure{Path: force, Err: fmt.Errorf("%s has no %s path", st.Names(), force), Unsupported: true})
	}
	return st
}

// setHooks turns the shared programs on for more detectors.
func setHooks(o *objects, bits uint32) error {
	if err := o.v.HooksOn.Set(o.hooks | bits); err != nil {
		return fmt.Errorf("enabling the shared programs (hooks_on): %w", err)
	}
	o.hooks |= bits
	return nil
}

func wantsAny(wanted, have []EventType) bool {
	for _, h := range have {
		if containsEvent(wanted, h) {
			return true
		}
	}
	return false
}

// attachOwnerTracking loads what listener events need to name a socket's
// owner, then teaches it the sockets that already exist. Failure is not
// fatal: events then name the owner from /proc where they can.
func attachOwnerTracking(spec *ebpf.CollectionSpec, o *objects, pids []uint32) error {
	if err := loadPath(spec, o, &ownerTracking); err != nil {
		return fmt.Errorf("socket owner tracking (%s): %w", ownerTracking.hooks, err)
	}
	if err := setHooks(o, ownerTracking.enable); err != nil {
		return fmt.Errorf("socket owner tracking: %w", err)
	}

	s := withPrograms(spec, ownerIterProg)
	iter, err := ebpf.NewCollectionWithOptions(s, ebpf.CollectionOptions{MapReplacements: o.maps.Maps, Cache: o.kernelBTF})
	if err != nil {
		return fmt.Errorf("loading the socket iterator: %w", explainLoad(err))
	}
	defer iter.Close()
	return errors.Join(ownerStorageNote(o), learnExistingSockets(iter.Programs[ownerIterProg], o.m.InodeOwners, pids))
}

func containsEvent(list []EventType, t EventType) bool {
	for _, e := range list {
		if e == t {
			return true
		}
	}
	return false
}

// errUnsupported marks a failure that means the kernel lacks what a path
// needs, not a fault of tcptrace's.
var errUnsupported = errors.New("not supported by this kernel")

// explainLoad turns the kernel's refusals into what an SRE can act on. The
// verifier's log is kept (%+v) when that is the cause.
func explainLoad(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.As(err, &ve):
		return fmt.Errorf("the verifier rejected the program: %+v", ve)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: refused (EPERM: needs root or CAP_BPF+CAP_PERFMON; lockdown also refuses fentry/fexit): %v", errUnsupported, err)
	case errors.Is(err, os.ErrNotExist) || strings.Contains(err.Error(), "not found"):
		return fmt.Errorf("%w: hook not in this kernel: %v", errUnsupported, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("%w: %v", errUnsupported, err)
	}
	return err
}

func explainAttach(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: kprobes unavailable or symbol missing (CONFIG_KPROBES off, or the function was inlined): %v", errUnsupported, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		// fentry/fexit: x86 BPF trampolines took at most 6 arguments
		// before 6.6; a tp_btf whose tracepoint is missing ends here too.
		return fmt.Errorf("%w: the kernel cannot attach this hook (before 6.6, x86 fentry/fexit took functions of at most 6 arguments): %v", errUnsupported, err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("%w: refused (EPERM): %v", errUnsupported, err)
	case errors.Is(err, unix.EACCES):
		// A kprobe is a perf event; Debian's kernel.perf_event_paranoid=3
		// opens perf events to CAP_SYS_ADMIN only (privileges.go).
		return fmt.Errorf("%w: refused (EACCES: a kprobe is a perf event, and kernel.perf_event_paranoid=%s; at 3, Debian's kernels let only CAP_SYS_ADMIN open one): %v",
			errUnsupported, procFS{}.sysctl("kernel/perf_event_paranoid"), err)
	}
	return err
}
