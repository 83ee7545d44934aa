package tracer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The path shapes the runtimes and the kubelet make, with the systemd and
// the cgroupfs drivers.
func TestContainerOf(t *testing.T) {
	const id = "3f1d5a0c2b7e4f6a8d9c0b1a2e3f4d5c6b7a8e9f0d1c2b3a4e5f6d7c8b9a0e1f"
	const uid = "7e2b1f04-8c3d-4a5b-9e6f-0a1b2c3d4e5f"
	uidSystemd := strings.ReplaceAll(uid, "-", "_")
	for _, c := range []struct {
		path, container, pod string
	}{
		{"/system.slice/docker-" + id + ".scope", id, ""},
		{"/docker/" + id, id, ""},
		{"/docker/" + id + "/init.scope", id, ""},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidSystemd + ".slice/cri-containerd-" + id + ".scope", id, uid},
		{"/kubepods/burstable/pod" + uid + "/" + id, id, uid},
		{"/kubepods/pod" + uid + "/" + id, id, uid},
		{"/kubepods.slice/kubepods-pod" + uidSystemd + ".slice/crio-" + id + ".scope", id, uid},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidSystemd + ".slice", "", uid},
		{"/kubepods.slice/kubepods-pod" + uidSystemd + ".slice/crio-conmon-" + id + ".scope", "", uid},
		{"/machine.slice/libpod-" + id + ".scope", id, ""},
		{"/machine.slice/libpod-" + id + ".scope/container", id, ""},
		{"/libpod_parent/libpod-" + id, id, ""},
		{"/machine.slice/libpod-conmon-" + id + ".scope", "", ""},
		{"/system.slice/nginx.service", "", ""},
		{"/user.slice/user-1000.slice/session-2.scope", "", ""},
		{"/", "", ""},
		{"/system.slice/docker-" + id[:12] + ".scope", "", ""}, // not a full id
	} {
		gotC, gotP := containerOf(c.path)
		if gotC != c.container || gotP != c.pod {
			t.Errorf("%s: container %q pod %q, want %q %q", c.path, gotC, gotP, c.container, c.pod)
		}
	}
}

func TestCgroup2Mount(t *testing.T) {
	hybrid := `25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
`
	if got := cgroup2Mount(strings.NewReader(hybrid)); got != "/sys/fs/cgroup/unified" {
		t.Errorf("hybrid: %q", got)
	}
	unified := `29 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	if got := cgroup2Mount(strings.NewReader(unified)); got != "/sys/fs/cgroup" {
		t.Errorf("unified: %q", got)
	}
	if got := cgroup2Mount(strings.NewReader("40 1 0:30 / /mnt/my\\040cg rw - cgroup2 none rw\n")); got != "/mnt/my cg" {
		t.Errorf("escaped: %q", got)
	}
	if got := cgroup2Mount(strings.NewReader("33 31 0:28 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n")); got != "" {
		t.Errorf("v1 only: %q", got)
	}
}

// The id of a directory is its inode; a directory made after the first
// walk is found by the walk a miss makes.
func TestCgroupsPathByID(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "a", "b"), 0o755)
	c := &cgroups{root: root, byID: map[uint64]string{}}
	ino := func(p string) uint64 {
		info, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}
	if p, ok := c.path(ino("a/b")); !ok || p != "/a/b" {
		t.Errorf("a/b: %q %v", p, ok)
	}
	if p, ok := c.path(ino("")); !ok || p != "/" {
		t.Errorf("root: %q %v", p, ok)
	}
	if c.idOf("/a/b") != ino("a/b") {
		t.Errorf("idOf")
	}
	os.MkdirAll(filepath.Join(root, "c"), 0o755)
	c.minRescan = time.Hour
	if _, ok := c.path(ino("c")); ok {
		t.Errorf("found a new cgroup before a rescan was due")
	}
	c.minRescan = 0
	if p, ok := c.path(ino("c")); !ok || p != "/c" {
		t.Errorf("new cgroup: %q %v", p, ok)
	}
	if _, ok := c.path(0); ok {
		t.Errorf("id 0 is unknown")
	}
}
