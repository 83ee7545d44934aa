package e2e

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Containers without a runtime: cgroups named as the kubelet and
// containerd name them, with both cgroup drivers, and a listening server
// started inside each (it moves itself in before it makes its socket, as a
// container's process starts in its cgroup). 20 clients flood its backlog
// of 6: the SYNs are dropped in softirq context, where the running task is
// anyone, yet every syn_drop names the server's container and pod, and the
// cgroup it is in. Once with tcptrace started before the server (the owner
// recorded at listen()), once after (found by the socket iterator, its
// cgroup read from /proc).
func TestCgroupsKubernetesShapes(t *testing.T) {
	requireEvents(t, "syn_drop")
	root := cgroup2Root(t)
	for _, driver := range []string{"systemd", "cgroupfs"} {
		for _, before := range []bool{true, false} {
			name := driver + "/tcptrace_started_after_the_server"
			if before {
				name = driver + "/tcptrace_started_before_the_server"
			}
			t.Run(name, func(t *testing.T) {
				id, uid := randomHex(t, 32), fmt.Sprintf("%s-%s-%s-%s-%s", randomHex(t, 4), randomHex(t, 2), randomHex(t, 2), randomHex(t, 2), randomHex(t, 6))
				var path string
				if driver == "systemd" {
					path = fmt.Sprintf("/tcptrace-e2e.slice/kubepods-burstable-pod%s.slice/cri-containerd-%s.scope", strings.ReplaceAll(uid, "-", "_"), id)
				} else {
					path = fmt.Sprintf("/tcptrace-e2e/kubepods/burstable/pod%s/%s", uid, id)
				}
				dir := makeCgroup(t, root, path)
				ns := newNetns(t)
				var tr *tracerRun
				if before {
					tr = startTracer(t, "-e", "syn_drop", "--interval", "500ms")
				}
				srv := startServerIn(t, ns, dir, path, 6)
				if !before {
					tr = startTracer(t, "-e", "syn_drop", "--interval", "500ms")
				}
				drops := floodDrops(t, tr, ns, srv)
				for _, e := range drops {
					if e.Cgroup != path || e.ContainerID != id || e.PodUID != uid {
						t.Errorf("syn_drop names cgroup %q container %q pod %q, want %q %q %q", e.Cgroup, e.ContainerID, e.PodUID, path, id, uid)
					}
				}
				t.Logf("%d syn_drop lines, %d drops, all in container %s of pod %s", len(drops), sumCounts(drops), id[:12], uid)
			})
		}
	}
}

// --container and --cgroup keep a container's or a pod's events, those in
// softirq context included, and nothing else: two pods' containers on one
// host, each with a flooded listener; a third container made in the first
// pod after tcptrace started counts for the pod (its cgroup is found at the
// next interval). The filtered runs count exactly what the unfiltered run
// counts for the processes they keep.
func TestCgroupFilter(t *testing.T) {
	requireEvents(t, "syn_drop")
	root := cgroup2Root(t)
	pod := "/tcptrace-e2e/kubepods/burstable/pod" + fmt.Sprintf("%s-%s-%s-%s-%s", randomHex(t, 4), randomHex(t, 2), randomHex(t, 2), randomHex(t, 2), randomHex(t, 6))
	other := "/tcptrace-e2e/kubepods/besteffort/pod" + fmt.Sprintf("%s-%s-%s-%s-%s", randomHex(t, 4), randomHex(t, 2), randomHex(t, 2), randomHex(t, 2), randomHex(t, 6))
	idA, idB, idC := randomHex(t, 32), randomHex(t, 32), randomHex(t, 32)
	dirA, dirB := makeCgroup(t, root, pod+"/"+idA), makeCgroup(t, root, other+"/"+idB)
	ns := newNetns(t)
	args := []string{"-e", "syn_drop", "--interval", "500ms"}
	all := startTracer(t, args...)
	byContainer := startTracer(t, append(args, "--container", idA[:12])...)
	byPod := startTracer(t, append(args, "--cgroup", pod)...)
	dirC := makeCgroup(t, root, pod+"/"+idC)
	time.Sleep(1500 * time.Millisecond) // an interval: byPod finds C
	srvA := startServerIn(t, ns, dirA, pod+"/"+idA, 4)
	srvB := startServerIn(t, ns, dirB, other+"/"+idB, 4)
	srvC := startServerIn(t, ns, dirC, pod+"/"+idC, 4)
	var clients []*clientsProc
	for _, srv := range []*helperProc{srvA, srvB, srvC} {
		flood, fill := floodClients(t, ns, srv.Port, 4, 6, 2500*time.Millisecond)
		clients = append(clients, flood, fill)
	}
	for _, cl := range clients {
		cl.send()
	}
	for _, tr := range []*tracerRun{all, byContainer, byPod} {
		if err := tr.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
		}
	}
	count := func(tr *tracerRun, srv *helperProc) uint64 { return sumCounts(tr.eventsFor("syn_drop", srv.PID)) }
	a, b, c := count(all, srvA), count(all, srvB), count(all, srvC)
	t.Logf("syn_drop host-wide: A %d, B %d, C %d; --container A: %d; --cgroup pod: A %d, C %d",
		a, b, c, sumCounts(byContainer.eventsFor("syn_drop", 0)), count(byPod, srvA), count(byPod, srvC))
	if a == 0 || b == 0 || c == 0 {
		t.Fatalf("a server had no drops host-wide (A %d, B %d, C %d):\n%s", a, b, c, all.stderrText())
	}
	if got := sumCounts(byContainer.eventsFor("syn_drop", 0)); got != a || count(byContainer, srvA) != a {
		t.Errorf("--container %s: %d drops (%d of A's), want A's %d only", idA[:12], got, count(byContainer, srvA), a)
	}
	if got := sumCounts(byPod.eventsFor("syn_drop", 0)); got != a+c || count(byPod, srvA) != a || count(byPod, srvC) != c {
		t.Errorf("--cgroup %s: %d drops (A %d, C %d), want A's %d and C's %d only", pod, got, count(byPod, srvA), count(byPod, srvC), a, c)
	}
}

// A socket belongs to the cgroup it was made in (sk_cgrp_data), also when
// its process moved since: a server listens in one container's cgroup and
// is moved into another before tcptrace starts; the socket iterator names
// the first, where /proc would say the second.
func TestCgroupsSocketOwnCgroup(t *testing.T) {
	requireEvents(t, "syn_drop")
	root := cgroup2Root(t)
	made, moved := "/tcptrace-e2e/"+randomHex(t, 32), "/tcptrace-e2e/"+randomHex(t, 32)
	dirMade, dirMoved := makeCgroup(t, root, made), makeCgroup(t, root, moved)
	ns := newNetns(t)
	srv := startServerIn(t, ns, dirMade, made, 6)
	if err := os.WriteFile(filepath.Join(dirMoved, "cgroup.procs"), []byte(strconv.Itoa(srv.PID)), 0); err != nil {
		t.Fatal(err)
	}
	tr := startTracer(t, "-e", "syn_drop", "--interval", "500ms")
	for _, e := range floodDrops(t, tr, ns, srv) {
		if e.Cgroup != made {
			t.Errorf("syn_drop names cgroup %q, want the socket's %q (its process is in %q now)", e.Cgroup, made, moved)
		}
	}
}

// floodDrops has 13 clients flood the server's full accept queue, stops the tracer and returns
// its syn_drop lines of the server (at least one).
func floodDrops(t *testing.T, tr *tracerRun, ns *netns, srv *helperProc) []event {
	t.Helper()
	cl, fill := floodClients(t, ns, srv.Port, 6, 13, 2500*time.Millisecond)
	cl.send()
	fill.send()
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	drops := tr.eventsFor("syn_drop", srv.PID)
	if len(drops) == 0 {
		t.Fatalf("no syn_drop of the server:\n%s", tr.stderrText())
	}
	return drops
}

// startServerIn starts a listening server (backlog) in ns, moved into the
// cgroup dir (path below the root) before it makes its socket.
func startServerIn(t *testing.T, ns *netns, dir, path string, backlog int) *helperProc {
	t.Helper()
	srv := startHelperNoReady(t, ns, "server", 0, helperBacklogEnv+"="+strconv.Itoa(backlog), helperCgroupEnv+"="+path)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(srv.PID)), 0); err != nil {
		t.Fatalf("moving the server into %s: %v", dir, err)
	}
	kv := srv.line("READY")
	srv.Port, _ = strconv.Atoi(kv["port"])
	if got := procCgroupPath(t, srv.PID); got != path {
		t.Fatalf("the server is in %q, not %q", got, path)
	}
	return srv
}

// cgroup2Root is where the cgroup v2 hierarchy is mounted (in the hybrid
// layout, /sys/fs/cgroup/unified).
func cgroup2Root(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, v := range fields {
			if v == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4]
			}
		}
	}
	t.Fatal("no cgroup2 hierarchy is mounted")
	return ""
}

// makeCgroup makes the cgroup path (and its parents) below root, removed
// again (deepest first) when the test ends and its processes are gone.
func makeCgroup(t *testing.T, root, path string) string {
	t.Helper()
	dir := filepath.Join(root, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for p := path; p != "/" && p != "."; p = filepath.Dir(p) {
			// A process just killed leaves its cgroup a moment later.
			for try := 0; try < 50; try++ {
				err := syscall.Rmdir(filepath.Join(root, p))
				if err == nil || err == syscall.ENOENT || err == syscall.ENOTEMPTY && try == 49 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return dir
}

func procCgroupPath(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	return ""
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
