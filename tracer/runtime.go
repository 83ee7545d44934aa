package tracer

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// A container's names are not in its cgroup: the runtime keeps them.
// Docker's API, which podman's service also speaks, answers
// GET /containers/<id>/json with the container's name and labels; the
// kubelet labels every container it starts with its pod's name and
// namespace and its own name in the pod. Read only, and only where the
// runtime's socket is there; otherwise a line has the ids alone.
// (containerd and CRI-O answer only their gRPC CRI: not asked here.)
var runtimeSockets = []string{"/run/podman/podman.sock", "/var/run/docker.sock", "/run/docker.sock"}

// kubeletLogLinks is where the kubelet links every container's log as
// <pod>_<namespace>_<container>-<container id>.log, whatever the runtime:
// the names of a pod's containers on a node with containerd or CRI-O,
// where no runtime answers Docker's API. Pod and namespace names are DNS
// labels and subdomains, container names DNS labels: none holds "_".
const kubeletLogLinks = "/var/log/containers"

const (
	labelPodName      = "io.kubernetes.pod.name"
	labelPodNamespace = "io.kubernetes.pod.namespace"
	labelContainer    = "io.kubernetes.container.name"
)

// containerNames is what the runtime says of a container.
type containerNames struct {
	pod, podNamespace, container string
}

type runtimeNames struct {
	logLinks string
	sockets  []string
	timeout  time.Duration
	// wait is how long a line waits for the names of a container not
	// asked about yet; past it the line goes without them and the lookup
	// goes on beside the decoding.
	wait time.Duration
	// lookup finds a container's names (nil: the log links, then the
	// sockets); the unit tests give their own.
	lookup func(id string) (containerNames, bool)
	mu     sync.Mutex
	known  map[string]*namesEntry
	// slow: a line waited in vain, or the last lookup to end took longer
	// than wait. Lines then do not wait at all, so that a runtime that
	// hangs costs one wait, not one per container, until it answers in
	// time again.
	slow bool
}

type namesEntry struct {
	names containerNames
	at    time.Time
	found bool
	// done is closed when the entry's lookup ends; asking is true until
	// then.
	done   chan struct{}
	asking bool
}

// retryAfter: a container the runtime did not know (or no runtime
// answered) is asked again after this long; a known one keeps its names.
const retryAfter = 30 * time.Second

func newRuntimeNames() *runtimeNames {
	return &runtimeNames{logLinks: kubeletLogLinks, sockets: runtimeSockets, timeout: 200 * time.Millisecond,
		wait: 200 * time.Millisecond, known: map[string]*namesEntry{}}
}

// names is a container's names as the kubelet's log links or a runtime
// give them, asked once per container (and again after retryAfter when none
// knew it). The lookup runs on its own, without the lock: the line that
// starts it waits at most wait for it (nothing when the runtime was slow
// last time), later lines take what is known, and a runtime that hangs
// delays no line more than once.
func (r *runtimeNames) names(id string) containerNames {
	if r == nil || id == "" {
		return containerNames{}
	}
	r.mu.Lock()
	if e, ok := r.known[id]; ok && (e.found || e.asking || time.Since(e.at) < retryAfter) {
		n := e.names
		r.mu.Unlock()
		return n
	}
	e := &namesEntry{at: time.Now(), done: make(chan struct{}), asking: true}
	r.known[id] = e
	wait := r.wait
	if r.slow {
		wait = 0
	}
	lookup := r.lookup
	if lookup == nil {
		lookup = r.ask
	}
	r.mu.Unlock()
	go func() {
		start := time.Now()
		n, found := lookup(id)
		r.mu.Lock()
		defer r.mu.Unlock()
		// (An entry forgotten meanwhile is no longer in known: filling
		// it in does not bring it back.)
		e.names, e.found, e.at, e.asking = n, found, time.Now(), false
		r.slow = time.Since(start) > r.wait
		close(e.done)
	}()
	timedOut := false
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-e.done:
		case <-t.C:
			timedOut = true
		}
		t.Stop()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if timedOut && e.asking {
		r.slow = true
	}
	return e.names
}

// ask looks a container's names up: the kubelet's log links, then each
// runtime socket there is, at most timeout each.
func (r *runtimeNames) ask(id string) (containerNames, bool) {
	if n, ok := kubeletLogNames(r.logLinks, id); ok {
		return n, true
	}
	for _, sock := range r.sockets {
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		if n, ok := inspectContainer(sock, id, r.timeout); ok {
			return n, true
		}
	}
	return containerNames{}, false
}

// forget drops what is known of the containers not in present (the
// containers the cgroup hierarchy names now): a container that is gone
// takes no more room.
func (r *runtimeNames) forget(present map[string]bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.known {
		if !present[id] {
			delete(r.known, id)
		}
	}
}

// inspectContainer asks one Docker-API socket about a container.
func inspectContainer(sock, id string, timeout time.Duration) (containerNames, bool) {
	c := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := c.Get("http://runtime/containers/" + id + "/json")
	if err != nil {
		return containerNames{}, false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return containerNames{}, false
	}
	var v struct {
		Name   string
		Config struct{ Labels map[string]string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return containerNames{}, false
	}
	n := containerNames{
		pod:          v.Config.Labels[labelPodName],
		podNamespace: v.Config.Labels[labelPodNamespace],
		container:    v.Config.Labels[labelContainer],
	}
	if n.container == "" {
		n.container = strings.TrimPrefix(v.Name, "/")
	}
	return n, true
}

// kubeletLogNames finds a container's pod, namespace and name in the name of
// the kubelet's link to its log.
func kubeletLogNames(dir, id string) (containerNames, bool) {
	if dir == "" || strings.ContainsAny(id, "/*?[") {
		return containerNames{}, false
	}
	links, _ := filepath.Glob(filepath.Join(dir, "*-"+id+".log"))
	for _, l := range links {
		base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(l), ".log"), "-"+id)
		if parts := strings.Split(base, "_"); len(parts) == 3 && parts[0] != "" && parts[1] != "" && parts[2] != "" {
			return containerNames{pod: parts[0], podNamespace: parts[1], container: parts[2]}, true
		}
	}
	return containerNames{}, false
}
