package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A real container: Debian's podman runs a listening server from an image
// built here offline (podman import of a root file system holding this
// test binary and the libraries it links), in a network namespace the test
// made, labelled as the kubelet labels a pod's container; podman's API
// service answers on its socket. 20 clients flood its backlog of 6 from
// outside the container. The drops happen in softirq context, yet every
// syn_drop carries the container's id and its pod's and its own names
// (JSON and the metrics' labels), their count is the namespace's
// ListenOverflows, and --container with a prefix of the id shows exactly
// those drops.
func TestPodmanContainer(t *testing.T) {
	requireEvents(t, "syn_drop")
	podman := requirePodman(t)
	image := importImage(t, podman)
	startPodmanService(t, podman)
	ns := newNetns(t)
	all := startTracer(t, "-e", "syn_drop,listen_overflow", "--interval", "500ms")
	metricsAddr := freeLoopbackAddr(t)
	withMetrics := startTracer(t, "-e", "syn_drop", "--interval", "500ms", "--metrics", metricsAddr, "-o", "none")

	c := startContainerServer(t, podman, image, ns, 6,
		"--label", "io.kubernetes.pod.name=web-0", "--label", "io.kubernetes.pod.namespace=shop",
		"--label", "io.kubernetes.container.name=nginx")
	id, port, pid := c.id, c.port, c.pid
	t.Logf("container %s, host pid %d, cgroup %s", id[:12], pid, procCgroupPath(t, pid))
	byContainer := startTracer(t, "-e", "syn_drop", "--interval", "500ms", "--container", id[:12])
	time.Sleep(500 * time.Millisecond)

	before := ns.netstat()
	cl, fill := floodClients(t, ns, port, 6, 13, 2500*time.Millisecond)
	cl.send()
	fill.send()
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	time.Sleep(time.Second) // an interval: the aggregated counts are printed
	exposition := scrape(t, metricsAddr)
	for _, tr := range []*tracerRun{all, withMetrics, byContainer} {
		if err := tr.stop(syscall.SIGINT); err != nil {
			t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
		}
	}
	drops := all.eventsFor("syn_drop", pid)
	if len(drops) == 0 {
		t.Fatalf("no syn_drop of the container's server (pid %d):\n%s", pid, dump(all.eventsFor("", 0)))
	}
	for _, e := range drops {
		if e.ContainerID != id || !strings.Contains(e.Cgroup, id) || e.Pod != "web-0" || e.PodNS != "shop" || e.Container != "nginx" {
			t.Errorf("syn_drop of the container names container %q (%q), cgroup %q, pod %q/%q; want %s (nginx) of shop/web-0",
				e.ContainerID, e.Container, e.Cgroup, e.PodNS, e.Pod, id)
		}
	}
	n := sumCounts(drops)
	if !kernelAgrees(t, all, ns, "ListenOverflows", n, delta["ListenOverflows"], all.skippedRuns(), "syn_drop", "listen_overflow") {
		t.Errorf("the container's syn_drop %d, its namespace's ListenOverflows +%d", n, delta["ListenOverflows"])
	}
	if got := sumCounts(byContainer.eventsFor("syn_drop", 0)); got != n || len(byContainer.eventsFor("syn_drop", pid)) == 0 {
		t.Errorf("--container %s: %d drops, the host-wide run %d of the container's", id[:12], got, n)
	}
	re := regexp.MustCompile(`(?m)^tcptrace_events_total\{[^}]*container_id="` + id + `",container_name="nginx"[^}]*pod_name="web-0",pod_namespace="shop"[^}]*\} (\d+)$`)
	if m := re.FindStringSubmatch(exposition); m == nil || m[1] != strconv.FormatUint(n, 10) {
		t.Errorf("metrics: no tcptrace_events_total of container %s with %d (%v):\n%s", id[:12], n, m, exposition)
	}
	t.Logf("%d drops of the container, all named after it", n)
}

// requirePodman finds podman, which the host always has (make deps-test)
// and the VM guests do not.
func requirePodman(t *testing.T) string {
	t.Helper()
	podman, err := exec.LookPath("podman")
	if err != nil {
		if inMatrix() {
			t.Skip("no podman in the VM guest: this test runs on the host")
		}
		t.Fatalf("podman is not installed (make deps-test installs Debian's podman and runc): %v", err)
	}
	return podman
}

// containerServer is the helper's listening server in a podman container.
type containerServer struct {
	name, id  string
	port, pid int // the port it listens on; its host pid
}

// startContainerServer runs the helper's server (listen backlog) from image
// in a container on the network namespace ns, with podman's extra flags.
func startContainerServer(t *testing.T, podman, image string, ns *netns, backlog int, flags ...string) containerServer {
	t.Helper()
	c := containerServer{name: "tcptrace-e2e-" + randomHex(t, 6)}
	args := append([]string{"--runtime", "runc", "run", "--rm", "-i", "--name", c.name,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "ns:/run/netns/" + ns.name}, flags...)
	cmd := exec.Command(podman, append(args, "-e", helperEnv+"=server", "-e", helperBacklogEnv+"="+strconv.Itoa(backlog),
		"-e", helperSecondsEnv+"=0", image, "/e2e.test")...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		exec.Command(podman, "rm", "-f", "-t", "0", c.name).Run()
		cmd.Wait()
	})
	out := bufio.NewScanner(stdout)
	if !out.Scan() {
		t.Fatalf("the container ended before READY: %s", stderr.String())
	}
	kv, ok := keyValues(out.Text(), "READY")
	if !ok {
		t.Fatalf("container: %q", out.Text())
	}
	c.port, _ = strconv.Atoi(kv["port"])
	inspect := func(format string) string {
		b, err := exec.Command(podman, "inspect", "-f", format, c.name).Output()
		if err != nil {
			t.Fatalf("podman inspect %s: %v", format, err)
		}
		return strings.TrimSpace(string(b))
	}
	c.id = inspect("{{.Id}}")
	c.pid, _ = strconv.Atoi(inspect("{{.State.Pid}}"))
	return c
}

// importImage builds the test's image offline: a root file system with
// this test binary and what it links (ldd), imported by podman.
func importImage(t *testing.T, podman string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"/e2e.test": self}
	if out, err := exec.Command("ldd", self).Output(); err == nil {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and the
		// interpreter "/lib64/ld-linux-x86-64.so.2 (0x...)".
		for _, line := range strings.Split(string(out), "\n") {
			for _, f := range strings.Fields(line) {
				if strings.HasPrefix(f, "/") {
					files[f] = f
				}
			}
		}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, dir := range []string{"proc", "sys", "dev", "tmp", "etc", "run"} {
		tw.WriteHeader(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	for in, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		for d := filepath.Dir(in); d != "/"; d = filepath.Dir(d) {
			tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(d, "/") + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
		tw.WriteHeader(&tar.Header{Name: strings.TrimPrefix(in, "/"), Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg})
		tw.Write(b)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	image := "localhost/tcptrace-e2e:" + randomHex(t, 4)
	cmd := exec.Command(podman, "import", "-", image)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command(podman, "rmi", "-f", image).Run() })
	return image
}

// scrape reads tcptrace's /metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// startPodmanService makes podman's API (Docker's, on podman's socket)
// answer, as it does where the podman.socket unit runs; one that already
// answers is left as it is.
func startPodmanService(t *testing.T, podman string) {
	t.Helper()
	const sock = "/run/podman/podman.sock"
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		return
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(podman, "system", "service", "--time=0", "unix://"+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		os.Remove(sock)
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("podman's API service did not answer on %s", sock)
}
