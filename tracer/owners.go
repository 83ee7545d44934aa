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
	"github.com/cilium/ebpf/link"
)

type procOwner struct {
	pid  uint32
	comm string
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
		comm := ""
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
			}
			if _, seen := out[uint32(ino)]; !seen {
				out[uint32(ino)] = procOwner{pid: uint32(pid), comm: comm}
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

func (o *inodeOwners) lookup(ino uint32) (uint32, string) {
	if ino == 0 {
		return 0, ""
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, ok := o.byInode[ino]; ok {
		return p.pid, p.comm
	}
	if time.Since(o.scanned) < o.interval {
		return 0, ""
	}
	o.scanned = time.Now()
	o.byInode = scanSockets(o.pids)
	p := o.byInode[ino]
	return p.pid, p.comm
}

// learnExistingSockets tells the kernel side who owns the sockets that were
// made before tcptrace started, and where the listeners are: it fills the
// inode -> owner table from /proc, then runs the iter/tcp program once in
// every network namespace (an iterator walks the namespace of its reader).
func learnExistingSockets(prog *ebpf.Program, inodeMap *ebpf.Map, pids []uint32) error {
	for ino, p := range scanSockets(pids) {
		v := tcptraceOwner{Tgid: p.pid}
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
	for _, path := range netnsPaths() {
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
