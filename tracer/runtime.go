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
	mu       sync.Mutex
	known    map[string]namesEntry
}

type namesEntry struct {
	names containerNames
	at    time.Time
	found bool
}

// retryAfter: a container the runtime did not know (or no runtime
// answered) is asked again after this long; a known one keeps its names.
const retryAfter = 30 * time.Second

func newRuntimeNames() *runtimeNames {
	return &runtimeNames{logLinks: kubeletLogLinks, sockets: runtimeSockets, timeout: 200 * time.Millisecond, known: map[string]namesEntry{}}
}

// names asks the runtimes for a container's names, once per container
// (and again after retryAfter when none knew it). At most timeout per
// socket: a stuck runtime delays one line, not the run.
func (r *runtimeNames) names(id string) containerNames {
	if r == nil || id == "" {
		return containerNames{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.known[id]; ok && (e.found || time.Since(e.at) < retryAfter) {
		return e.names
	}
	e := namesEntry{at: time.Now()}
	e.names, e.found = kubeletLogNames(r.logLinks, id)
	for _, sock := range r.sockets {
		if e.found {
			break
		}
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		if n, ok := inspectContainer(sock, id, r.timeout); ok {
			e.names, e.found = n, true
			break
		}
	}
	r.known[id] = e
	return e.names
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
