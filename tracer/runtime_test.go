package tracer

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
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
	r := &runtimeNames{sockets: []string{filepath.Join(t.TempDir(), "absent.sock"), sock}, timeout: time.Second, known: map[string]namesEntry{}}
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
	r.known["cccc"] = namesEntry{at: time.Now().Add(-retryAfter - time.Second)}
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
	r := &runtimeNames{logLinks: dir, sockets: []string{filepath.Join(t.TempDir(), "absent.sock")}, timeout: time.Second, known: map[string]namesEntry{}}
	if got := r.names(id); got.pod != "web-0" {
		t.Errorf("runtimeNames with log links: %+v", got)
	}
}
