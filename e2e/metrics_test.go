package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// The fleet's view: a real Prometheus server scrapes tcptrace --metrics
// (-o none, a daemon printing no lines) every second while a server with a
// backlog of 6 that never accepts is flooded by 20 clients. Prometheus's
// sums of tcptrace_events_total for that listener's port equal the
// namespace's counters that count those events one to one (and tcptrace's
// own live check says it missed none), the probe-path info metric names
// the path tcptrace uses, and the process name label is the server's.
func TestMetricsPrometheus(t *testing.T) {
	requireEvents(t, "syn_drop", "listen_overflow")
	prom, err := exec.LookPath("prometheus")
	if err != nil {
		if inMatrix() {
			t.Skip("no Prometheus server in the VM guest: this test runs on the host")
		}
		t.Fatalf("Prometheus is not installed (make deps-test installs Debian's prometheus): %v", err)
	}
	ns := newNetns(t)
	srv := startServer(t, ns, 6)
	metricsAddr := freeLoopbackAddr(t)
	tr := startTracer(t, "-e", "syn_drop,syn_cookie,listen_overflow,synack_retransmit", "--interval", "500ms",
		"--metrics", metricsAddr, "-o", "none")
	api := startPrometheus(t, prom, metricsAddr)
	if resp, err := http.Get("http://" + metricsAddr + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz with every listener event attached: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	// Scraped at least once before the flood: the series start from a
	// scrape that Prometheus saw.
	if !waitQuery(t, api, `up{job="tcptrace"} == 1`, 20*time.Second, func(v float64, n int) bool { return n == 1 }) {
		t.Fatalf("Prometheus never scraped tcptrace on %s", metricsAddr)
	}

	before := ns.netstat()
	cl, fill := floodClients(t, ns, srv.Port, 6, 13, 2500*time.Millisecond)
	cl.send()
	fill.send()
	delta := counterDelta(before, ns.netstat(), listenCounters...)
	port := strconv.Itoa(srv.Port)
	sum := func(selector string) string {
		return fmt.Sprintf(`(sum(tcptrace_events_total{%s,listen_port="%s"}) or vector(0))`, selector, port)
	}
	// Each counter the kernel bumps once per event of the kinds beside it
	// (the flood moves ListenOverflows only: the SYN queue stays empty with
	// the accept queue full, so the others must stay at 0 on both sides).
	checks := []struct{ counter, q string }{
		{"ListenOverflows", sum(`event="syn_drop",reason="accept_queue_full"`) + " + " + sum(`event="listen_overflow"`)},
		{"TCPReqQFullDrop", sum(`event="syn_drop",reason="syn_queue_full"`)},
		{"TCPReqQFullDoCookies", sum(`event="syn_cookie"`)},
	}
	// tcptrace prints an aggregated count within an interval (500 ms) and
	// Prometheus scrapes every second: the sums settle within a few.
	for _, c := range checks {
		want := delta[c.counter]
		waitQuery(t, api, c.q, 10*time.Second, func(v float64, n int) bool { return n == 1 && uint64(v) >= want })
	}
	time.Sleep(2 * time.Second) // nothing more may come
	got := map[string]float64{}
	for _, c := range checks {
		if s := query(t, api, c.q); len(s) == 1 {
			got[c.counter] = s[0].value
		}
	}
	comms := query(t, api, fmt.Sprintf(`sum by (comm) (tcptrace_events_total{listen_port="%s"})`, port))
	notSeen := query(t, api, fmt.Sprintf(`tcptrace_kernel_counter_not_seen{counter="ListenOverflows",netns="%d"}`, ns.inode()))
	paths := query(t, api, `tcptrace_probe_info{event="syn_drop"}`)
	if err := tr.stop(syscall.SIGINT); err != nil {
		t.Fatalf("tcptrace: %v\n%s", err, tr.stderrText())
	}
	t.Logf("kernel %v; Prometheus %v; by comm %v; probe %v", delta, got, comms, paths)
	if delta["ListenOverflows"] == 0 {
		t.Errorf("the flood moved no ListenOverflows: nothing to compare")
	}
	for _, c := range checks {
		if got[c.counter] != float64(delta[c.counter]) {
			t.Errorf("Prometheus's %s = %v, the namespace's %s went up by %d", c.q, got[c.counter], c.counter, delta[c.counter])
		}
	}
	// tcptrace's own live check: the namespace saw no traffic before the
	// flood, so every ListenOverflows is one it reported.
	if len(notSeen) != 1 || notSeen[0].value != 0 {
		t.Errorf("tcptrace_kernel_counter_not_seen for ListenOverflows in netns %d: %v, want 0", ns.inode(), notSeen)
	}
	if t.Failed() {
		t.Logf("tcptrace:\n%s", tr.stderrText())
	}
	if len(comms) != 1 || comms[0].labels["comm"] != procComm(t, srv.PID) {
		t.Errorf("process names %v, want the server's only (%q)", comms, procComm(t, srv.PID))
	}
	want := "tracepoint"
	if forcePath != "" {
		want = forcePath
	}
	if len(paths) != 1 || paths[0].labels["path"] != want {
		t.Errorf("tcptrace_probe_info for syn_drop: %v, want path %q", paths, want)
	}
	if !strings.Contains(tr.stderrText(), "serving metrics on "+metricsAddr) {
		t.Errorf("no word about the metrics address:\n%s", tr.stderrText())
	}
}

// startPrometheus runs a Prometheus server that scrapes target every
// second, and returns its API's base URL.
func startPrometheus(t *testing.T, bin, target string) string {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: tcptrace
    static_configs:
      - targets: [%q]
`, target)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeLoopbackAddr(t)
	cmd := exec.Command(bin, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", logs.String())
		}
	})
	return "http://" + addr
}

type promSample struct {
	labels map[string]string
	value  float64
}

// query asks Prometheus for an instant vector.
func query(t *testing.T, api, q string) []promSample {
	t.Helper()
	out, err := tryQuery(api, q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return out
}

func tryQuery(api, q string) ([]promSample, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(api + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Error  string
		Data   struct {
			Result []struct {
				Metric map[string]string
				Value  [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	var out []promSample
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("value %v: %v", s.Value, err)
		}
		out = append(out, promSample{labels: s.Metric, value: v})
	}
	return out, nil
}

// waitQuery polls q until ok says its first value (and the number of
// samples) is what the test waits for; false if that did not come.
func waitQuery(t *testing.T, api, q string, within time.Duration, ok func(v float64, n int) bool) bool {
	t.Helper()
	var last []promSample
	var err error
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if last, err = tryQuery(api, q); err == nil {
			v := 0.0
			if len(last) > 0 {
				v = last[0].value
			}
			if ok(v, len(last)) {
				return true
			}
		}
	}
	t.Logf("Prometheus: %s gave %v (%v) for %v", q, last, err, within)
	return false
}

// freeLoopbackAddr is a loopback address with a port nothing listens on.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func procComm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// An address that is taken or malformed is the user's to fix: one line,
// exit 2, and no BPF program loaded on the way (so nothing attached, even
// briefly). The kernel hands out program ids in increasing order
// (idr_alloc_cyclic), so programs loaded just before tcptrace and just
// after it have consecutive ids only if none was loaded in between; another
// process on the host may load one meanwhile, so a run is tried again
// before that counts as tcptrace's. Maps are not counted: the privilege
// check, made before the address is looked at, makes and frees one to learn
// how the kernel charges BPF memory (cilium/ebpf's rlimit).
func TestMetricsAddressRefused(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, addr := range []string{taken.Addr().String(), "127.0.0.1", "256.0.0.1:9464"} {
		var out []byte
		var err error
		loaded := loadedMeanwhile(t, 3, func() {
			out, err = exec.Command(tcptraceBin, "--metrics", addr, "-o", "none", "-d", "1").CombinedOutput()
		})
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("--metrics %s: %v, want exit 2; output %q", addr, err, out)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "tcptrace: --metrics "+addr+": ") {
			t.Errorf("--metrics %s: want one line naming it, got %q", addr, out)
		}
		if loaded != "" {
			t.Errorf("--metrics %s: the kernel handed out %s while tcptrace refused its address", addr, loaded)
		}
	}
}

// loadedMeanwhile runs f up to tries times, and says what BPF program ids
// the kernel handed out during the last of them ("" when none: then f is
// not run again).
func loadedMeanwhile(t *testing.T, tries int, f func()) string {
	t.Helper()
	// Up to 5.10 a program's memory is charged to the user's locked
	// memory, which every process of the user shares (the maps of a
	// tcptrace that just exited are freed a little later), and checked
	// against this process's RLIMIT_MEMLOCK; later kernels charge the
	// memory cgroup, and RemoveMemlock leaves the limit alone.
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &saved); err != nil {
		t.Fatal(err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		t.Fatal(err)
	}
	// Back as it was: the tests after start tcptrace with the limit it
	// inherits from this process (TestPrivilegesNamed's CAP_SYS_RESOURCE
	// case needs the usual one).
	t.Cleanup(func() { unix.Setrlimit(unix.RLIMIT_MEMLOCK, &saved) })
	// The first load in a process is preceded by cilium/ebpf's probes of
	// the kernel's features, and reading its id by another: made here,
	// once.
	newProgramID(t)
	var loaded string
	for try := 0; try < tries; try++ {
		before := newProgramID(t)
		f()
		after := newProgramID(t)
		if after == before+1 {
			return ""
		}
		loaded = fmt.Sprintf("program ids %d to %d", before+1, after-1)
		t.Logf("try %d: %s (tcptrace's, or another process's on the host)", try+1, loaded)
	}
	return loaded
}

// newProgramID loads a trivial socket filter and returns the id the kernel
// gave it.
func newProgramID(t *testing.T) ebpf.ProgramID {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.LoadImm(asm.R0, 0, asm.DWord), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("the kernel gives no program ids")
	}
	return id
}
