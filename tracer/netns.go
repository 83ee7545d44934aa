package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// netnsPaths returns one /proc/<pid>/ns/net path per network namespace in
// use on the host, by the namespace's inode.
func netnsPaths() map[uint64]string {
	out := map[uint64]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		p := filepath.Join("/proc", e.Name(), "ns", "net")
		var st unix.Stat_t
		if unix.Stat(p, &st) != nil {
			continue
		}
		if _, ok := out[st.Ino]; !ok {
			out[st.Ino] = p
		}
	}
	// Namespaces kept alive by a bind mount only (ip netns add) have no
	// process: find them where iproute2 mounts them.
	mounts, _ := os.ReadDir("/run/netns")
	for _, m := range mounts {
		p := filepath.Join("/run/netns", m.Name())
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			if _, ok := out[st.Ino]; !ok {
				out[st.Ino] = p
			}
		}
	}
	return out
}

// netnsPathsOf is netnsPaths limited to the namespaces of the given
// processes (every one when none is given): a run limited to processes
// enters no other namespace, and needs no CAP_SYS_ADMIN to enter those.
func netnsPathsOf(pids []uint32) map[uint64]string {
	if len(pids) == 0 {
		return netnsPaths()
	}
	out := map[uint64]string{}
	for _, pid := range pids {
		p := filepath.Join("/proc", strconv.FormatUint(uint64(pid), 10), "ns", "net")
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			if _, ok := out[st.Ino]; !ok {
				out[st.Ino] = p
			}
		}
	}
	return out
}

// inNetns runs f on a thread of its own inside the namespace at path (an
// iterator walks, and /proc/thread-self/net shows, the namespace of the
// thread). The thread is thrown away afterwards: it stays in that namespace.
func inNetns(path string, f func() error) error {
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with the goroutine, with its
		// namespace and whatever affinity f left it with.
		runtime.LockOSThread()
		// setns needs CAP_SYS_ADMIN even into the namespace the thread is
		// already in: skip it there, so that a run that enters no other
		// namespace needs no CAP_SYS_ADMIN (privileges.go).
		var st, own unix.Stat_t
		if unix.Stat(path, &st) == nil && unix.Stat("/proc/thread-self/ns/net", &own) == nil && st.Ino == own.Ino && st.Dev == own.Dev {
			done <- f()
			return
		}
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("setns: %w", err)
			return
		}
		done <- f()
	}()
	return <-done
}
