package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tcptrace/tcptrace/tracer"
	"golang.org/x/sys/unix"
)

// checkBTF: CO-RE needs the kernel's own type information; without it
// nothing loads, and the loader's error would not say why.
func checkBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errors.New("no kernel BTF: /sys/kernel/btf/vmlinux is missing (tcptrace needs a kernel built with CONFIG_DEBUG_INFO_BTF=y)")
	}
	return nil
}

// checkPIDs refuses a pid that does not exist, rather than trace nothing.
func checkPIDs(pids []uint32) error {
	for _, pid := range pids {
		if err := unix.Kill(int(pid), 0); errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("no process with pid %d", pid)
		}
	}
	return nil
}

// watchPIDs says when a traced process exits and cancels the run when none
// is left. It polls every 100 ms: cheap, and works on every kernel.
func watchPIDs(ctx context.Context, pids []uint32, stderr io.Writer, cancel context.CancelFunc) {
	alive := map[uint32]bool{}
	for _, p := range pids {
		alive[p] = true
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for len(alive) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for p := range alive {
			if err := unix.Kill(int(p), 0); errors.Is(err, unix.ESRCH) || isZombie(p) {
				fmt.Fprintf(stderr, "tcptrace: traced process %d exited\n", p)
				delete(alive, p)
			}
		}
	}
	fmt.Fprintln(stderr, "tcptrace: no traced process left, stopping")
	cancel()
}

// isZombie: an exited child of an unreaped parent still answers kill(0).
func isZombie(pid uint32) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the ")" that closes the command name.
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' && i+2 < len(b) {
			return b[i+2] == 'Z'
		}
	}
	return false
}

// resolveCgroups turns --cgroup and --container into the cgroups to trace:
// a cgroup must exist (a path from /proc/<pid>/cgroup, or the same with the
// hierarchy's mount point in front), a container prefix must name one
// container on this host.
func resolveCgroups(o *options) error {
	switch {
	case o.cgroup != "":
		root := tracer.CgroupRoot()
		if root == "" {
			return errors.New("--cgroup: no cgroup v2 hierarchy is mounted")
		}
		p := o.cgroup
		if rel, ok := strings.CutPrefix(p, root); ok && (rel == "" || rel[0] == '/') {
			p = rel
			if p == "" {
				p = "/"
			}
		}
		if info, err := os.Stat(filepath.Join(root, p)); err != nil || !info.IsDir() {
			return fmt.Errorf("--cgroup %s: no such cgroup below %s", o.cgroup, root)
		}
		o.tracer.Cgroups = []string{p}
	case o.container != "":
		paths, err := tracer.ContainerCgroups(o.container)
		if err != nil {
			return fmt.Errorf("--container: %w", err)
		}
		o.tracer.Cgroups = paths
	}
	return nil
}
