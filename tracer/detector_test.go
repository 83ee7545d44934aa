package tracer

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

func TestEventNamesRoundTrip(t *testing.T) {
	for _, e := range AllEventTypes() {
		got, err := ParseEventType(e.String())
		if err != nil || got != e {
			t.Errorf("%s: %v %v", e, got, err)
		}
	}
}

// Every event of the C enum belongs to exactly one detector, every probe set
// to its detector's events, and every event is traced by some probe set.
func TestDescriptorsCoverEveryEvent(t *testing.T) {
	names := map[string]bool{}
	owner := map[EventType]string{}
	for _, d := range detectors {
		if d.name == "" || names[d.name] {
			t.Errorf("detector name %q empty or used twice", d.name)
		}
		names[d.name] = true
		if d.decode == nil || d.explain == nil || len(d.events) == 0 || len(d.reasons) == 0 {
			t.Errorf("%s: no decode, explain, events or reasons", d.name)
		}
		traced := map[EventType]bool{}
		for _, set := range d.probes {
			if len(set.paths) == 0 {
				t.Errorf("%s: a probe set of %v has no path", d.name, set.events)
			}
			for _, e := range set.events {
				if !d.has(e) {
					t.Errorf("%s: probe set traces %s, not one of its events", d.name, e)
				}
				traced[e] = true
			}
		}
		for _, e := range d.events {
			if o, dup := owner[e.typ]; dup {
				t.Errorf("%s reported by %s and %s", e.name, o, d.name)
			}
			owner[e.typ] = d.name
			if !traced[e.typ] {
				t.Errorf("%s: no probe set traces %s", d.name, e.name)
			}
			if detectorOf(e.typ) != d {
				t.Errorf("%s: decoding does not find its detector", e.name)
			}
		}
		for e, with := range d.companions {
			if !d.has(e) || detectorOf(with) == nil {
				t.Errorf("%s: companion %s of %s", d.name, with, e)
			}
		}
		for _, c := range d.counters {
			if len(c.terms) == 0 || c.counter == "" {
				t.Errorf("%s: counter check %+v", d.name, c)
			}
			for _, term := range c.terms {
				if !d.has(term.event) || (term.reason != "" && !slices.Contains(d.reasons, term.reason)) {
					t.Errorf("%s: counter check %s: %s is not one of its events and reasons", d.name, c.counter, term)
				}
			}
		}
	}
	// The C enum, read from the object's BTF: no event may be left
	// without a detector.
	spec, err := loadTcptrace()
	if err != nil {
		t.Fatal(err)
	}
	var enum *btf.Enum
	if err := spec.Types.TypeByName("event_type", &enum); err != nil {
		t.Fatal(err)
	}
	for _, v := range enum.Values {
		if v.Value == 0 || strings.HasSuffix(v.Name, "_MAX") || strings.HasSuffix(v.Name, "_COUNT") {
			continue
		}
		if detectorOf(EventType(v.Value)) == nil {
			t.Errorf("%s (%d) has no detector", v.Name, v.Value)
		}
	}
}

// Each decoded event's reason is one its detector lists.
func TestDescriptorsListEveryReason(t *testing.T) {
	for _, c := range goldenCases() {
		e := goldenDecode(c)
		d := detectorOf(e.Type)
		found := false
		for _, r := range d.reasons {
			found = found || r == e.Reason
		}
		if !found {
			t.Errorf("%s: reason %q is not among %s's %v", c.name, e.Reason, d.name, d.reasons)
		}
	}
}

// The descriptors against the embedded object, without loading anything:
// every program they name exists and is of the kind its path attaches, and
// every setting and shared-hook bit is the object's.
func TestDescriptorsMatchTheObject(t *testing.T) {
	spec, err := loadTcptrace()
	if err != nil {
		t.Fatal(err)
	}
	var hooks *btf.Enum
	if err := spec.Types.TypeByName("shared_hook", &hooks); err != nil {
		t.Fatal(err)
	}
	var hookBits uint64
	for _, v := range hooks.Values {
		hookBits |= v.Value
	}
	for _, d := range detectors {
		for _, set := range d.probes {
			for i := range set.paths {
				p := &set.paths[i]
				where := fmt.Sprintf("%s %v path %d (%s)", d.name, set.events, i, p.path)
				if err := checkPath(spec, p, hookBits); err != nil {
					t.Errorf("%s: %v", where, err)
				}
			}
		}
	}
	if err := checkPath(spec, &ownerTracking, hookBits); err != nil {
		t.Errorf("owner tracking: %v", err)
	}
	for _, prog := range []string{ownerIterProg, mibBaselineProg} {
		if spec.Programs[prog] == nil {
			t.Errorf("no program %s", prog)
		}
	}
	// Settings of different detectors must not collide: each sets its
	// own work on or off.
	var v tcptraceVariableSpecs
	if err := spec.Assign(&v); err != nil {
		t.Fatal(err)
	}
	seen := map[*ebpf.VariableSpec]string{}
	for _, d := range detectors {
		if d.settings == nil {
			continue
		}
		for _, s := range d.settings(AllEventTypes(), &v) {
			if o, dup := seen[s.v]; dup {
				t.Errorf("%s set by %s and %s", s.v.Name, o, d.name)
			}
			seen[s.v] = d.name
		}
	}
}

// checkPath: the path's programs exist and are of its kind. A tracepoint
// path runs tp_btf programs only; a fentry or kprobe path runs at least one
// program of its kind, and may add tp_btf ones.
func checkPath(spec *ebpf.CollectionSpec, p *pathSpec, hookBits uint64) error {
	if p.hooks == "" || len(p.progs) == 0 {
		return fmt.Errorf("no hooks text or no programs")
	}
	if uint64(p.enable)&^hookBits != 0 {
		return fmt.Errorf("hooks_on bits %#x not in enum shared_hook (%#x)", p.enable, hookBits)
	}
	own := 0
	for _, pa := range p.progs {
		ps := spec.Programs[pa.prog]
		if ps == nil {
			return fmt.Errorf("no program %s in the object", pa.prog)
		}
		rawTp := ps.Type == ebpf.Tracing && ps.AttachType == ebpf.AttachTraceRawTp
		switch pa.kind {
		case attachTracing:
			if ps.Type != ebpf.Tracing {
				return fmt.Errorf("%s (%s) is not a tracing program", pa.prog, ps.SectionName)
			}
			if pa.symbol != "" {
				return fmt.Errorf("%s: a tracing program takes its target from its section", pa.prog)
			}
		case attachKprobe, attachKretprobe:
			prefix := "kprobe/"
			if pa.kind == attachKretprobe {
				prefix = "kretprobe/"
			}
			if ps.Type != ebpf.Kprobe || !strings.HasPrefix(ps.SectionName, prefix) || pa.symbol == "" {
				return fmt.Errorf("%s (%s) is not a %s program with a symbol", pa.prog, ps.SectionName, prefix)
			}
		}
		switch {
		case p.path == PathTracepoint && !rawTp:
			return fmt.Errorf("%s (%s) on a tracepoint path", pa.prog, ps.SectionName)
		case p.path == PathFentry && ps.Type == ebpf.Tracing && (ps.AttachType == ebpf.AttachTraceFEntry || ps.AttachType == ebpf.AttachTraceFExit):
			own++
		case p.path == PathKprobe && ps.Type == ebpf.Kprobe:
			own++
		case p.path == PathTracepoint:
			own++
		case !rawTp:
			return fmt.Errorf("%s (%s) on a %s path", pa.prog, ps.SectionName, p.path)
		}
	}
	if own == 0 {
		return fmt.Errorf("none of its programs is a %s program", p.path)
	}
	return nil
}
