package tracer

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The runtime's answer (Docker's API, as podman's service speaks it): the
// kubelet's labels name the pod, its namespace and the container; a plain
// container is named by its own name. An unknown container is asked again
// only after retryAfter.
func TestRuntimeNames(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		switch r.URL.Path {
		case "/containers/aaaa/json":
			w.Write([]byte(`{"Id":"aaaa","Name":"/k8s_nginx_web-0","Config":{"Labels":{"io.kubernetes.pod.name":"web-0","io.kubernetes.pod.namespace":"shop","io.kubernetes.container.name":"nginx"}}}`))
		case "/containers/bbbb/json":
			w.Write([]byte(`{"Id":"bbbb","Name":"/redis","Config":{"Labels":null}}`))
		default:
			http.Error(w, `{"message":"no such container"}`, http.StatusNotFound)
		}
	})}
	go srv.Serve(l)
	defer srv.Close()
	r := &runtimeNames{sockets: []string{filepath.Join(t.TempDir(), "absent.sock"), sock}, timeout: time.Second, wait: time.Second, known: map[string]*namesEntry{}}
	if got, want := r.names("aaaa"), (containerNames{pod: "web-0", podNamespace: "shop", container: "nginx"}); got != want {
		t.Errorf("pod container: %+v, want %+v", got, want)
	}
	if got, want := r.names("bbbb"), (containerNames{container: "redis"}); got != want {
		t.Errorf("plain container: %+v, want %+v", got, want)
	}
	if got := r.names("cccc"); got != (containerNames{}) {
		t.Errorf("unknown container: %+v", got)
	}
	before := asked.Load()
	r.names("aaaa")
	r.names("cccc")
	if asked.Load() != before {
		t.Errorf("asked the runtime again within retryAfter")
	}
	r.known["cccc"] = &namesEntry{at: time.Now().Add(-retryAfter - time.Second)}
	r.names("cccc")
	if asked.Load() != before+1 {
		t.Errorf("an unknown container is not asked again after retryAfter")
	}
}

// On a node whose runtime speaks only CRI, the kubelet's log links name a
// pod's containers; the runtime is not asked for a container they name.
func TestKubeletLogNames(t *testing.T) {
	dir := t.TempDir()
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, name := range []string{
		"web-0_shop_nginx-" + id + ".log",
		"api-7d9f8-x2x_payments_side-car-" + "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210" + ".log",
		"odd_name_with_underscores-" + "1111111111111111111111111111111111111111111111111111111111111111" + ".log",
	} {
		if err := os.Symlink("/var/log/pods/x/0.log", filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]containerNames{
		id: {pod: "web-0", podNamespace: "shop", container: "nginx"},
		"fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210": {pod: "api-7d9f8-x2x", podNamespace: "payments", container: "side-car"},
		"1111111111111111111111111111111111111111111111111111111111111111": {},
		"2222222222222222222222222222222222222222222222222222222222222222": {},
		"*": {},
	} {
		got, ok := kubeletLogNames(dir, id)
		if got != want || ok != (want != containerNames{}) {
			t.Errorf("%s: %+v %v, want %+v", id[:1], got, ok, want)
		}
	}
	r := &runtimeNames{logLinks: dir, sockets: []string{filepath.Join(t.TempDir(), "absent.sock")}, timeout: time.Second, wait: time.Second, known: map[string]*namesEntry{}}
	if got := r.names(id); got.pod != "web-0" {
		t.Errorf("runtimeNames with log links: %+v", got)
	}
}

// returnsSoon fails the test if f does not return within a second: it
// must not wait for a lookup that hangs.
func returnsSoon(t *testing.T, what string, f func() containerNames) containerNames {
	t.Helper()
	ch := make(chan containerNames, 1)
	go func() { ch <- f() }()
	select {
	case n := <-ch:
		return n
	case <-time.After(5 * time.Second):
		t.Fatalf("%s waited for a runtime that hangs", what)
		return containerNames{}
	}
}

// A runtime that hangs delays the line that first asks about a container
// by wait at most, and no other line: not those of containers already
// known (the lock is not held while it is asked), nor those of the next
// container asked about. Later lines get the names once it answers.
func TestRuntimeNamesSlowRuntime(t *testing.T) {
	release := make(chan struct{})
	r := &runtimeNames{wait: 20 * time.Millisecond, known: map[string]*namesEntry{
		"known": {names: containerNames{container: "redis"}, found: true, at: time.Now()},
	}}
	r.lookup = func(id string) (containerNames, bool) {
		<-release
		return containerNames{container: "c-" + id}, true
	}
	if n := returnsSoon(t, "the first line", func() containerNames { return r.names("aaaa") }); n != (containerNames{}) {
		t.Errorf("names before the runtime answered: %+v", n)
	}
	r.mu.Lock()
	r.wait = time.Hour // a line that waits at all now hangs the test
	r.mu.Unlock()
	if n := returnsSoon(t, "a known container's line", func() containerNames { return r.names("known") }); n.container != "redis" {
		t.Errorf("known container: %+v", n)
	}
	returnsSoon(t, "the next container's first line", func() containerNames { return r.names("bbbb") })
	returnsSoon(t, "the container's next line", func() containerNames { return r.names("aaaa") })
	close(release)
	for _, id := range []string{"aaaa", "bbbb"} {
		r.mu.Lock()
		done := r.known[id].done
		r.mu.Unlock()
		<-done
		if n := r.names(id); n.container != "c-"+id {
			t.Errorf("%s once the runtime answered: %+v", id, n)
		}
	}
}

// What is known of a container goes when the walk of the hierarchy that a
// new cgroup brings finds its cgroup gone; a container still there keeps
// its names and is not asked about again.
func TestRuntimeNamesForgetsGone(t *testing.T) {
	root := t.TempDir()
	const a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	const b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	mkdir := func(p string) uint64 {
		if err := os.MkdirAll(filepath.Join(root, p), 0o755); err != nil {
			t.Fatal(err)
		}
		info, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return info.Sys().(*syscall.Stat_t).Ino
	}
	idA, idB := mkdir("libpod_parent/libpod-"+a), mkdir("system.slice/docker-"+b+".scope")
	var asked atomic.Int32
	r := &runtimeNames{wait: time.Second, known: map[string]*namesEntry{}, lookup: func(id string) (containerNames, bool) {
		asked.Add(1)
		return containerNames{container: id[:1]}, true
	}}
	c := &cgroups{root: root, byID: map[uint64]string{}, gone: r.forget}
	for _, id := range []uint64{idA, idB} {
		p, ok := c.path(id)
		if !ok {
			t.Fatalf("cgroup %d not found", id)
		}
		ctr, _ := containerOf(p)
		if n := r.names(ctr); n.container != ctr[:1] {
			t.Errorf("%s: %+v", p, n)
		}
	}
	// (The new directory is made first: this file system, unlike
	// cgroupfs, may give it the inode just freed.)
	idNew := mkdir("user.slice")
	if err := os.Remove(filepath.Join(root, "system.slice", "docker-"+b+".scope")); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.path(idNew); !ok { // a new cgroup: a walk
		t.Fatal("the new cgroup was not found")
	}
	r.mu.Lock()
	_, hasA := r.known[a]
	_, hasB := r.known[b]
	r.mu.Unlock()
	if !hasA || hasB {
		t.Errorf("known after b's cgroup went: a %v, b %v; want a only", hasA, hasB)
	}
	before := asked.Load()
	if n := r.names(a); n.container != "a" || asked.Load() != before {
		t.Errorf("a container still there: %+v, asked again %v", n, asked.Load() != before)
	}
}
