package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
)

// Containers are cgroups. The kernel side records the cgroup (v2) id of
// each event's process, bpf_get_current_cgroup_id(): the kernfs id of the
// cgroup's directory, which is its inode number in the cgroup2 file system
// on 64-bit kernels. User space maps the id to the directory's path by
// walking that file system, and the path to a container and a pod by the
// names the runtimes and the kubelet give their cgroups: the ids need no
// runtime socket and no Kubernetes API server. Only a container's names
// (its pod's, its own) are not in its cgroup: runtime.go asks the
// kubelet's log links or the runtime's Docker-compatible API for them.
type cgroups struct {
	root string // where the v2 hierarchy is mounted; "": none
	mu   sync.Mutex
	// byID: every cgroup directory seen, by id.
	byID      map[uint64]string
	scanned   time.Time
	minRescan time.Duration
	// gone, when set, is told after each walk which containers the
	// hierarchy names now, so that what is kept of the others goes.
	gone func(present map[string]bool)
}

// newCgroups finds the cgroup2 mount: /sys/fs/cgroup on a unified host,
// /sys/fs/cgroup/unified in systemd's hybrid layout.
func newCgroups() *cgroups {
	c := &cgroups{byID: map[uint64]string{}, minRescan: time.Second}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		c.root = cgroup2Mount(f)
		f.Close()
	}
	return c
}

// cgroup2Mount is the first cgroup2 mount point in a mountinfo file.
func cgroup2Mount(r io.Reader) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		f := strings.Fields(sc.Text())
		for i, v := range f {
			if v == "-" && i+1 < len(f) && f[i+1] == "cgroup2" && len(f) > 4 {
				return unescapeMountinfo(f[4])
			}
		}
	}
	return ""
}

// unescapeMountinfo undoes the octal escapes of spaces and the like.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			n := 0
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				n = n*8 + int(c-'0')
			}
			if ok {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// path is the cgroup's path below the hierarchy's root ("/" for the root),
// or false if no directory has that id. A miss walks the hierarchy again,
// at most once per minRescan: containers come and go while tcptrace runs.
func (c *cgroups) path(id uint64) (string, bool) {
	if c == nil || c.root == "" || id == 0 {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.byID[id]; ok {
		return p, true
	}
	if time.Since(c.scanned) < c.minRescan {
		return "", false
	}
	c.scan()
	p, ok := c.byID[id]
	return p, ok
}

// scan rebuilds the table from the hierarchy as it is now: the cgroups
// that are gone go too.
func (c *cgroups) scan() {
	c.scanned = time.Now()
	c.byID = map[uint64]string{}
	c.walk("/", func(rel string, id uint64) { c.byID[id] = rel })
	if c.gone != nil {
		present := map[string]bool{}
		for _, rel := range c.byID {
			if id, _ := containerOf(rel); id != "" {
				present[id] = true
			}
		}
		c.gone(present)
	}
}

// walk calls fn with the path (below the root; "/" for the root) and id of
// the cgroup at path and of every cgroup below it. A cgroup that goes while
// it is walked is left out.
func (c *cgroups) walk(path string, fn func(rel string, id uint64)) {
	if c == nil || c.root == "" {
		return
	}
	filepath.WalkDir(filepath.Join(c.root, path), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if id := dirID(d.Info()); id != 0 {
			rel := strings.TrimPrefix(p, c.root)
			if rel == "" {
				rel = "/"
			}
			fn(rel, id)
		}
		return nil
	})
}

// dirID is a cgroup directory's id: its inode number.
func dirID(info fs.FileInfo, err error) uint64 {
	if err != nil {
		return 0
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// idOf is the id of the cgroup at path below the root, from the
// directory's inode; 0 if it cannot be read.
func (c *cgroups) idOf(path string) uint64 {
	if c == nil || c.root == "" {
		return 0
	}
	return dirID(os.Stat(filepath.Join(c.root, path)))
}

// procCgroup is a process's cgroup v2 path ("0::/path" in
// /proc/<pid>/cgroup), "" if it has none.
func procCgroup(pid uint32) string {
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/cgroup")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p
		}
	}
	return ""
}

// A container's id as the runtimes name its cgroup: Docker
// (docker-<id>.scope with systemd, /docker/<id> with cgroupfs), containerd's
// CRI plugin (cri-containerd-<id>.scope, or the bare id below a kubepods
// pod), CRI-O (crio-<id>.scope), podman (libpod-<id>.scope, or
// /libpod_parent/libpod-<id>). The runtimes' monitor processes
// (crio-conmon-<id>, libpod-conmon-<id>) are not the container.
var containerRe = regexp.MustCompile(`^(?:docker-|cri-containerd-|crio-|libpod-)?([0-9a-f]{64})(?:\.scope)?$`)

// A pod's UID in the kubelet's cgroup names: kubepods-burstable-pod<uid>.slice
// with the systemd driver (dashes written as underscores), pod<uid> with
// cgroupfs.
var podRe = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$`)

// containerOf reads the container id and pod UID a cgroup path names;
// empty when it names none. The deepest container wins: a container's own
// sub-cgroups (init.scope, a systemd inside it) are still its.
func containerOf(path string) (container, pod string) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(segs) - 1; i >= 0; i-- {
		if container == "" {
			if m := containerRe.FindStringSubmatch(segs[i]); m != nil {
				container = m[1]
			}
		}
		if pod == "" {
			if m := podRe.FindStringSubmatch(segs[i]); m != nil {
				pod = strings.ReplaceAll(m[1], "_", "-")
			}
		}
	}
	return container, pod
}

// cgroupFilter keeps the kernel's cgroup_filter map to the cgroups below
// the roots asked for: a container's processes may make sub-cgroups while
// tcptrace runs, so the walk is redone once per interval.
type cgroupFilter struct {
	cg    *cgroups
	roots []string
	m     *ebpf.Map
	put   map[uint64]bool
}

// refresh adds the ids of the roots and of every cgroup below them that
// the map does not have yet. Ids of cgroups that are gone stay: the kernel
// does not reuse them.
func (f *cgroupFilter) refresh() error {
	if f == nil {
		return nil
	}
	for _, root := range f.roots {
		for _, id := range f.cg.below(root) {
			if f.put[id] {
				continue
			}
			if err := f.m.Put(id, uint8(1)); err != nil {
				return fmt.Errorf("setting the cgroup filter: %w", err)
			}
			f.put[id] = true
		}
	}
	return nil
}

// below lists the ids of the cgroup at path and of its descendants.
func (c *cgroups) below(path string) []uint64 {
	var ids []uint64
	c.walk(path, func(_ string, id uint64) { ids = append(ids, id) })
	return ids
}

// CgroupRoot is where the cgroup v2 hierarchy is mounted, "" if nowhere.
func CgroupRoot() string { return newCgroups().root }

// ContainerCgroups lists the cgroups (paths below the v2 root) of the
// container whose id starts with prefix: its own and, with the systemd
// driver, the scopes a runtime makes beside it are told apart by the full
// id. An error when no container, or more than one, has that prefix.
func ContainerCgroups(prefix string) ([]string, error) {
	c := newCgroups()
	if c.root == "" {
		return nil, errors.New("no cgroup v2 hierarchy is mounted: containers cannot be told apart")
	}
	byID := map[string][]string{}
	c.walk("/", func(rel string, _ uint64) {
		id, _ := containerOf(rel)
		if id == "" || !strings.HasPrefix(id, prefix) {
			return
		}
		// The container's topmost cgroup: its descendants come with it.
		if parent, _ := containerOf(filepath.Dir(rel)); parent != id {
			byID[id] = append(byID[id], rel)
		}
	})
	switch len(byID) {
	case 0:
		return nil, fmt.Errorf("no container %q on this host (no cgroup below %s names it)", prefix, c.root)
	case 1:
		for _, paths := range byID {
			return paths, nil
		}
	}
	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id[:12])
	}
	sort.Strings(ids)
	return nil, fmt.Errorf("container %q is ambiguous: %s", prefix, strings.Join(ids, ", "))
}

// HostRunsContainers says whether any cgroup on this host names a
// container now: the text output then shows a CONTAINER column.
func HostRunsContainers() bool { return len(HostContainers()) > 0 }

// HostContainers is the set of container ids the host's cgroups name now.
func HostContainers() map[string]bool {
	out := map[string]bool{}
	newCgroups().walk("/", func(rel string, _ uint64) {
		if id, _ := containerOf(rel); id != "" {
			out[id] = true
		}
	})
	return out
}
