package tracer

import (
	"fmt"
	"time"

	"github.com/cilium/ebpf"
)

// checkScratchReturned verifies, once the programs are detached, that every
// program gave back the scratch slot it built its event in (bpf/common.bpf.h,
// SCRATCH_EVENT): the per-CPU depth must be back to zero. A slot kept would
// leave that CPU one level short for the rest of the run, and after four,
// with every event there counted lost; a nonzero depth is a tcptrace bug and
// is reported as one. A program still finishing on another CPU just after
// the detach gets a moment before the second look.
func checkScratchReturned(m *ebpf.Map) error {
	var leaked []string
	for try := 0; try < 2; try++ {
		if try > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		var per []tcptraceScratchStack
		if err := m.Lookup(uint32(0), &per); err != nil {
			return fmt.Errorf("reading the scratch slots: %w", err)
		}
		leaked = leaked[:0]
		for cpu, s := range per {
			if s.Depth != 0 {
				leaked = append(leaked, fmt.Sprintf("CPU %d: %d", cpu, s.Depth))
			}
		}
		if len(leaked) == 0 {
			return nil
		}
	}
	return fmt.Errorf("internal error: scratch slots not given back after detaching (%v): some program returned without releasing its event slot", leaked)
}
