package tracer

import (
	"net"
	"net/http"
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
