package tracer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
)

// kallsyms is what tcptrace needs from /proc/kallsyms, read in one pass.
// The kernel generates the file on each read (about 60 ms of system time for
// 120k symbols on 6.18), so it is read once per process, while the programs
// load (kernelSymbols is started early by New). Root reads real addresses
// (kptr_restrict allows CAP_SYSLOG).
type kallsyms struct {
	addr map[string]uint64 // wanted symbols of the core kernel, of any kind
	end  map[string]uint64 // for kallsymsRanged: the next text symbol's address
}

// kallsymsNames is every symbol tcptrace looks up: one pass finds them all.
var kallsymsNames = []string{"runqueues", "tcp_delack_timer", "tcp_rcv_state_process", "tw_timer_handler", "cookie_v4_check", "cookie_v6_check"}

// kallsymsRanged are the functions whose end tcptrace needs: a tracepoint's
// caller address is matched against [start, end).
var kallsymsRanged = []string{"tcp_rcv_state_process", "cookie_v4_check", "cookie_v6_check"}

var (
	ksymsOnce sync.Once
	ksyms     *kallsyms
	ksymsErr  error
)

// kernelSymbols reads /proc/kallsyms once per process; concurrent callers
// wait for the one read.
func kernelSymbols() (*kallsyms, error) {
	ksymsOnce.Do(func() {
		f, err := os.Open("/proc/kallsyms")
		if err != nil {
			ksymsErr = err
			return
		}
		defer f.Close()
		ksyms, ksymsErr = parseKallsyms(f, kallsymsNames, kallsymsRanged)
	})
	return ksyms, ksymsErr
}

// kallsymsAddr returns the address of one of kallsymsNames.
func kallsymsAddr(name string) (uint64, error) {
	k, err := kernelSymbols()
	if err != nil {
		return 0, err
	}
	if a := k.addr[name]; a != 0 {
		return a, nil
	}
	return 0, fmt.Errorf("%s not in /proc/kallsyms (or addresses hidden)", name)
}

// parseKallsyms reads "address type name [module]" lines without allocating
// per line. A function's end is the lowest text address above its start
// among the lines that follow it: scripts/kallsyms sorts the core kernel's
// symbols by address, and modules' symbols come after them, higher up.
func parseKallsyms(r io.Reader, wanted, ranged []string) (*kallsyms, error) {
	k := &kallsyms{addr: map[string]uint64{}, end: map[string]uint64{}}
	want := map[string]bool{}
	for _, w := range wanted {
		want[w] = true
	}
	var open []string // ranged functions seen, end still to find
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Bytes()
		sp1 := bytes.IndexByte(line, ' ')
		if sp1 < 0 || len(line) < sp1+4 || line[sp1+2] != ' ' {
			continue
		}
		typ, name := line[sp1+1], line[sp1+3:]
		text := typ == 't' || typ == 'T'
		if i := bytes.IndexAny(name, " \t"); i >= 0 {
			// "[module]" follows: a module's symbol, never one of ours,
			// but its address still ends a core function.
			name = nil
		}
		named := name != nil && want[string(name)] // no allocation: map lookup by []byte conversion
		if !named && !(text && len(open) > 0) {
			continue
		}
		a, err := strconv.ParseUint(string(line[:sp1]), 16, 64)
		if err != nil || a == 0 {
			continue
		}
		if text {
			for _, f := range open {
				if a > k.addr[f] && (k.end[f] == 0 || a < k.end[f]) {
					k.end[f] = a
				}
			}
		}
		if named {
			n := string(name)
			k.addr[n] = a
			for _, r := range ranged {
				if r == n {
					open = append(open, n)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return k, nil
}

// funcRange returns a function's start and the next text symbol's address.
func (k *kallsyms) funcRange(name string) (start, end uint64, err error) {
	start = k.addr[name]
	if start == 0 {
		return 0, 0, fmt.Errorf("%s not in /proc/kallsyms (or addresses hidden)", name)
	}
	end = k.end[name]
	if end == 0 {
		return 0, 0, fmt.Errorf("no symbol after %s in /proc/kallsyms", name)
	}
	return start, end, nil
}
