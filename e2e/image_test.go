package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The node agent as the DaemonSet runs it: the image `make image` builds,
// under podman with exactly the DaemonSet's namespaces, capabilities,
// seccomp profile, read-only root, memory limit, mounts and arguments (read
// from deploy/kubernetes/daemonset.yaml, so the two cannot drift), in a
// network namespace of its own as a pod's. /readyz answers only once the
// probes are attached; the agent counts the syn_drops of a server in
// another container and of one on the host, each named as what it is.
// Without any one of the capabilities it was given, it names that one and
// exits 2.
func TestImageDaemonSet(t *testing.T) {
	requireEvents(t, "syn_drop")
	podman := requirePodman(t)
	ds := readDaemonSet(t)
	agent := buildAgentImage(t)
	pod := newNetns(t)
	args := podmanArgs(t, ds, pod.name, "")

	name := "tcptrace-e2e-agent-" + randomHex(t, 4)
	run := exec.Command(podman, append(append([]string{"--runtime", "runc", "run", "--rm", "--name", name}, args...), agent)...)
	run.Args = append(run.Args, ds.Spec.Template.Spec.Containers[0].Args...)
	var logs bytes.Buffer
	run.Stdout, run.Stderr = &logs, &logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		exec.Command(podman, "rm", "-f", "-t", "0", name).Run()
		<-exited
	})
	port := metricsPort(t, ds)
	addr := "127.0.0.1:" + strconv.Itoa(port)

	// From the container's start: while the programs load, /healthz
	// answers and /readyz says "loading" (503); the first 200 of /readyz
	// comes with every event's probe attached, as the metrics then show.
	start := time.Now()
	loading, healthyWhileLoading := 0, false
	for {
		code, body, err := httpGetIn(pod.name, addr, "/readyz")
		if err == nil {
			if code == http.StatusOK {
				break
			}
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "loading") {
				t.Fatalf("/readyz before ready: %d %q, want 503 loading\n%s", code, body, logs.String())
			}
			if loading++; loading == 1 {
				hc, hb, herr := httpGetIn(pod.name, addr, "/healthz")
				if herr != nil || hc != http.StatusOK {
					t.Errorf("/healthz while loading: %d %q %v", hc, hb, herr)
				}
				healthyWhileLoading = herr == nil && hc == http.StatusOK
				if mc, mb, merr := httpGetIn(pod.name, addr, "/metrics"); merr == nil && mc == http.StatusOK {
					t.Errorf("/metrics while loading: 200\n%s", mb)
				}
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("the agent exited (%v) before ready:\n%s", err, logs.String())
		default:
		}
		if time.Since(start) > 60*time.Second {
			t.Fatalf("/readyz not ready in 60 s: %d %v\n%s", code, err, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("ready %v after the container started; /readyz answered 503 loading %d times before (/healthz 200 meanwhile: %v)",
		time.Since(start).Round(time.Millisecond), loading, healthyWhileLoading)
	_, exposition, err := httpGetIn(pod.name, addr, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^tcptrace_probe_info\{event="([a-z_]+)",path="none"\}`).FindAllStringSubmatch(exposition, -1); len(m) > 0 {
		t.Errorf("ready while some events have no probe: %v", m)
	}
	for _, e := range allEventNames(t) {
		if !strings.Contains(exposition, `tcptrace_probe_info{event="`+e+`",path=`) {
			t.Errorf("ready, but no tcptrace_probe_info for %s:\n%s", e, exposition)
		}
	}
	if code, _, err := httpGetIn(pod.name, addr, "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("/healthz: %d %v", code, err)
	}

	// A server in another container, and one on the host (a process of no
	// container, in a namespace of its own), each flooded.
	image := importImage(t, podman)
	other := newNetns(t)
	srv := startContainerServer(t, podman, image, other, 6)
	ctrID, ctrPort := srv.id, srv.port
	// The kubelet's link to the container's log, as on a node whose runtime
	// speaks only CRI: the agent reads the pod's names from it.
	link := filepath.Join("/var/log/containers", "web-0_shop_nginx-"+ctrID+".log")
	if err := os.Symlink("/var/log/pods/shop_web-0_uid/nginx/0.log", link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })

	hostNS := newNetns(t)
	hostSrv := startHelper(t, hostNS, "server", 0, helperBacklogEnv+"=6")

	before := map[*netns]map[string]uint64{other: other.netstat(), hostNS: hostNS.netstat()}
	for ns, p := range map[*netns]int{other: ctrPort, hostNS: hostSrv.Port} {
		flood, fill := floodClients(t, ns, p, 6, 13, 2500*time.Millisecond)
		flood.send()
		fill.send()
	}
	time.Sleep(1500 * time.Millisecond) // the agent's interval: aggregated counts reach the metrics
	_, exposition, err = httpGetIn(pod.name, addr, "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	series := metricSeries(exposition, "tcptrace_events_total")
	for _, c := range []struct {
		what      string
		ns        *netns
		container string // the container_id label wanted
		port      int
	}{
		{"the server in another container", other, ctrID, ctrPort},
		{"the server on the host", hostNS, "", hostSrv.Port},
	} {
		var got uint64
		for _, s := range series {
			if s.labels["event"] != "syn_drop" || s.labels["listen_port"] != strconv.Itoa(c.port) {
				continue
			}
			if s.labels["container_id"] != c.container || s.labels["comm"] != "e2e.test" {
				t.Errorf("%s: a series names container %q, process %q; want %q, e2e.test", c.what, s.labels["container_id"], s.labels["comm"], c.container)
			}
			if pod := s.labels["pod_namespace"] + "/" + s.labels["pod_name"] + "/" + s.labels["container_name"]; c.container != "" && pod != "shop/web-0/nginx" {
				t.Errorf("%s: a series names %q, want shop/web-0/nginx (the kubelet's log link)", c.what, pod)
			}
			got += uint64(s.value)
		}
		kernel := counterDelta(before[c.ns], c.ns.netstat(), "ListenOverflows")["ListenOverflows"]
		t.Logf("%s: %d syn_drop, ListenOverflows +%d", c.what, got, kernel)
		if got == 0 || got > kernel {
			t.Errorf("%s: %d syn_drop in the agent's metrics, its namespace's ListenOverflows +%d:\n%s", c.what, got, kernel, exposition)
		}
	}
	select {
	case err := <-exited:
		t.Fatalf("the agent exited: %v\n%s", err, logs.String())
	default:
	}

	// The host's PID namespace is needed: in one of its own, the agent says
	// so in one line and exits 2.
	if ds.Spec.Template.Spec.HostPID {
		t.Run("without the host's PID namespace", func(t *testing.T) {
			args := podmanArgs(t, ds, pod.name, "")
			i := slices.Index(args, "--pid")
			if i < 0 || args[i+1] != "host" {
				t.Fatalf("podmanArgs %q: no --pid host", args)
			}
			args = slices.Delete(args, i, i+2)
			// An agent that does not refuse runs until stopped.
			name := "tcptrace-e2e-nopid-" + randomHex(t, 4)
			t.Cleanup(func() { exec.Command(podman, "rm", "-f", "-t", "0", name).Run() })
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, podman, append(append([]string{"--runtime", "runc", "run", "--rm", "--name", name}, args...), agent)...)
			cmd.Args = append(cmd.Args, ds.Spec.Template.Spec.Containers[0].Args...)
			refusedInOneLine(t, cmd, "tcptrace: not in the host's PID namespace", "hostPID: true")
		})
	} else {
		t.Error("the DaemonSet does not ask for the host's PID namespace: the agent refuses to run without it")
	}

	// Each capability the DaemonSet adds is needed: without it, the agent
	// names it in one line and exits 2 (CAP_SYSLOG only where the kernel
	// hides addresses from a process without it).
	for _, c := range ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add {
		capName := "CAP_" + string(c)
		t.Run("without "+capName, func(t *testing.T) {
			if capName == "CAP_SYSLOG" && !kallsymsHiddenWithoutSyslog() {
				t.Skipf("kernel.perf_event_paranoid<=1 and kernel.kptr_restrict=0 show addresses to anyone: CAP_SYSLOG is not needed here")
			}
			if capName == "CAP_DAC_READ_SEARCH" {
				holdSocketAs(t, 65534)
			}
			args := podmanArgs(t, ds, pod.name, c)
			cmd := exec.Command(podman, append(append([]string{"--runtime", "runc", "run", "--rm"}, args...), agent)...)
			cmd.Args = append(cmd.Args, ds.Spec.Template.Spec.Containers[0].Args...)
			refusedInOneLine(t, cmd, "tcptrace: missing capability "+capName+": ")
		})
	}
}

// readDaemonSet reads deploy/kubernetes/daemonset.yaml.
func readDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	b, err := os.ReadFile("../deploy/kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds appsv1.DaemonSet
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("want one container in the DaemonSet, got %d", len(ds.Spec.Template.Spec.Containers))
	}
	return &ds
}

// buildAgentImage runs `make image` with a tag of this test's own.
func buildAgentImage(t *testing.T) string {
	t.Helper()
	repo, version := "localhost/tcptrace-e2e-agent", "e2e-"+randomHex(t, 4)
	cmd := exec.Command("make", "-C", "..", "image", "IMAGE="+repo, "VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", repo+":"+version, repo+":latest").Run() })
	return repo + ":" + version
}

// podmanArgs turns the DaemonSet's pod into podman's flags: the pod's own
// network namespace is netnsName; without, when set, is a capability left
// out. A field this does not know fails the test: the manifest cannot ask
// for something the test does not give.
func podmanArgs(t *testing.T, ds *appsv1.DaemonSet, netnsName string, without corev1.Capability) []string {
	t.Helper()
	spec := ds.Spec.Template.Spec
	c := spec.Containers[0]
	args := []string{"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "ns:/run/netns/" + netnsName}
	// The pod's fields and the container's that this knows: each is given
	// to podman below, or says nothing podman could give (scheduling, the
	// service account token tcptrace does not read, the probes, tested
	// themselves). Any other (a pod securityContext, sysctls, the host's
	// network, env, a command) fails the test until taught here.
	unknownFields(t, "the pod's spec", spec, "containers", "hostPID", "automountServiceAccountToken", "priorityClassName", "tolerations", "volumes")
	unknownFields(t, "the container", c, "name", "image", "args", "ports", "securityContext", "resources", "livenessProbe", "readinessProbe", "volumeMounts")
	if spec.HostNetwork || spec.HostIPC {
		t.Fatal("the DaemonSet asks for the host's network or IPC namespace: teach podmanArgs")
	}
	if spec.HostPID {
		args = append(args, "--pid", "host")
	}
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatal("the DaemonSet's container has no securityContext.capabilities")
	}
	unknownFields(t, "the container's securityContext", sc, "runAsUser", "runAsGroup", "readOnlyRootFilesystem", "seccompProfile", "capabilities")
	if sc.RunAsUser != nil {
		g := int64(0)
		if sc.RunAsGroup != nil {
			g = *sc.RunAsGroup
		}
		args = append(args, "--user", fmt.Sprintf("%d:%d", *sc.RunAsUser, g))
	}
	if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		args = append(args, "--read-only")
	}
	switch p := sc.SeccompProfile; {
	case p == nil || p.Type == corev1.SeccompProfileTypeRuntimeDefault:
		// podman's default profile
	case p.Type == corev1.SeccompProfileTypeUnconfined:
		args = append(args, "--security-opt", "seccomp=unconfined")
	default:
		t.Fatalf("seccompProfile %s: teach podmanArgs", p.Type)
	}
	for _, d := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(string(d)))
	}
	for _, a := range sc.Capabilities.Add {
		if a != without {
			args = append(args, "--cap-add", "CAP_"+string(a))
		}
	}
	if m := c.Resources.Limits.Memory(); !m.IsZero() {
		args = append(args, "--memory", strconv.FormatInt(m.Value(), 10))
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok || v.HostPath == nil {
			t.Fatalf("volume %s: only hostPath volumes are known to podmanArgs", vm.Name)
		}
		if v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectoryOrCreate {
			os.MkdirAll(v.HostPath.Path, 0o755)
		}
		// The kubelet bind-mounts a hostPath recursively (the node's
		// /sys/fs/cgroup is a tmpfs of mounts).
		opts := []string{"rbind"}
		if vm.ReadOnly {
			opts = append(opts, "ro")
		}
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationHostToContainer {
			opts = append(opts, "rslave")
		}
		args = append(args, "-v", v.HostPath.Path+":"+vm.MountPath+":"+strings.Join(opts, ","))
	}
	return args
}

// unknownFields fails the test when v, as the manifest spells it, sets a
// field not in known.
func unknownFields(t *testing.T, what string, v any, known ...string) {
	t.Helper()
	raw, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := yaml.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for f := range fields {
		if !slices.Contains(known, f) {
			t.Fatalf("%s sets %s: teach podmanArgs what it means", what, f)
		}
	}
}

func metricsPort(t *testing.T, ds *appsv1.DaemonSet) int {
	t.Helper()
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		if p.Name == "metrics" {
			return int(p.ContainerPort)
		}
	}
	t.Fatal("the DaemonSet has no port named metrics")
	return 0
}

// httpGetIn makes one GET from inside the network namespace: the socket is
// made on a thread that entered it (an http.Client would dial from another
// goroutine, on another thread).
func httpGetIn(netnsName, addr, path string) (int, string, error) {
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(filepath.Join("/run/netns", netnsName), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- result{err: err}
			return
		}
		conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	r := <-done
	return r.code, r.body, r.err
}

// kallsymsHiddenWithoutSyslog: kallsyms_show_value() shows addresses to a
// process without CAP_SYSLOG only with kptr_restrict=0 and
// perf_event_paranoid<=1.
func kallsymsHiddenWithoutSyslog() bool {
	read := func(p string) int {
		b, _ := os.ReadFile(p)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			return 2
		}
		return n
	}
	return read("/proc/sys/kernel/kptr_restrict") != 0 || read("/proc/sys/kernel/perf_event_paranoid") > 1
}

// holdSocketAs starts a process of another user holding a socket, as a
// pod's non-root server is: its /proc/<pid>/fd is that user's, mode 0500.
func holdSocketAs(t *testing.T, uid uint32) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "socket")
	defer f.Close()
	cmd := exec.Command("sleep", "600")
	cmd.ExtraFiles = []*os.File{f}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

// sample is one line of an exposition: its labels and value.
type sample struct {
	labels map[string]string
	value  float64
}

// metricSeries reads the samples of one metric from a text exposition.
func metricSeries(exposition, name string) []sample {
	var out []sample
	label := regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
	for _, line := range strings.Split(exposition, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		i := strings.LastIndex(rest, "} ")
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[i+2:], 64)
		if err != nil {
			continue
		}
		s := sample{labels: map[string]string{}, value: v}
		for _, m := range label.FindAllStringSubmatch(rest[:i], -1) {
			s.labels[m[1]] = m[2]
		}
		out = append(out, s)
	}
	return out
}

// allEventNames are the events tcptrace knows, from its --help.
func allEventNames(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command(tcptraceBin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("tcptrace --help: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`only these events \(comma-separated\): ([a-z_, ]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("tcptrace --help lists no events:\n%s", out)
	}
	return strings.Split(string(m[1]), ", ")
}

// refusedInOneLine runs the agent and fails t unless it exits 2 with one
// line that starts with prefix and holds each of want: a refusal before
// anything is loaded.
func refusedInOneLine(t *testing.T, cmd *exec.Cmd, prefix string, want ...string) {
	t.Helper()
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("exit %v, want 2:\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	ok := len(lines) == 1 && strings.HasPrefix(lines[0], prefix)
	for _, w := range want {
		ok = ok && strings.Contains(lines[0], w)
	}
	if !ok {
		t.Errorf("want one line %q... holding %q, got:\n%s", prefix, want, out)
	}
}
