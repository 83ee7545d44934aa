package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkOverhead measures what an application feels: request/response
// latency (64-byte ping-pong on loopback, our own loop) and bulk throughput
// (iperf3, 3 s), with no tracer, with tcptrace (every event), and with the
// bpftrace script of BenchmarkBPFCost, in interleaved rounds; it reports
// medians and the ratios to no tracer. It asserts nothing about time.
func BenchmarkOverhead(b *testing.B) {
	const rounds = 7
	type sample struct{ rttUs, gbps float64 }
	results := map[string][]sample{}
	setups := []string{"none", "tcptrace", "bpftrace"}
	if _, err := exec.LookPath("bpftrace"); err != nil {
		setups = setups[:2]
	}
	ns := newNetns(b)
	for r := 0; r < rounds; r++ {
		for _, setup := range setups {
			stop := func() {}
			switch setup {
			case "tcptrace":
				tr := startTracer(b, "-o", "json")
				stop = func() { tr.stop(syscall.SIGINT) }
			case "bpftrace":
				stop = startBpftraceProc(b)
			}
			h := startHelper(b, ns, "pingpong", 2*time.Second)
			trips, _ := strconv.ParseFloat(h.run()["trips"], 64)
			s := sample{rttUs: 2e6 / trips, gbps: iperf3(b, ns)}
			stop()
			results[setup] = append(results[setup], s)
		}
	}
	median := func(v []float64) float64 {
		sort.Float64s(v)
		return v[len(v)/2]
	}
	var rows []string
	base := map[string]float64{}
	for _, setup := range setups {
		var rtt, bw []float64
		for _, s := range results[setup] {
			rtt, bw = append(rtt, s.rttUs), append(bw, s.gbps)
		}
		mr, mb := median(rtt), median(bw)
		if setup == "none" {
			base["rtt"], base["bw"] = mr, mb
		}
		// The spread of the rounds beside the median: on a 2-core VM the
		// bulk figure moves by more than the tracers' cost from round to
		// round, and a ratio without it would claim more than it shows.
		rows = append(rows, fmt.Sprintf("| %s | %.2f µs (%.2f-%.2f) | %+.1f%% | %.2f Gbit/s (%.2f-%.2f) | %+.1f%% |",
			setup, mr, rtt[0], rtt[len(rtt)-1], 100*(mr/base["rtt"]-1), mb, bw[0], bw[len(bw)-1], 100*(mb/base["bw"]-1)))
		b.ReportMetric(mr, "us-rtt-"+setup)
		b.ReportMetric(mb, "Gbps-"+setup)
	}
	benchReport(b, fmt.Sprintf("What an application feels: %d interleaved rounds, medians (lowest-highest)", rounds),
		"| tracer | request/response RTT | vs none | bulk throughput (iperf3) | vs none |\n|---|---|---|---|---|\n"+strings.Join(rows, "\n"))
}

// iperf3 runs a 3-second bulk transfer on the namespace's loopback and
// returns the received rate in Gbit/s (0 when iperf3 is not installed).
func iperf3(b *testing.B, ns *netns) float64 {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return 0
	}
	srv := exec.Command("ip", "netns", "exec", ns.name, "iperf3", "-s", "-1", "-p", "5201")
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer srv.Wait()
	time.Sleep(200 * time.Millisecond)
	out, err := exec.Command("ip", "netns", "exec", ns.name, "iperf3", "-c", "127.0.0.1", "-p", "5201", "-t", "3", "-J").Output()
	if err != nil {
		srv.Process.Kill()
		b.Fatalf("iperf3: %v", err)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		b.Fatalf("iperf3 output: %v", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// startBpftraceProc starts the comparison script and returns its stop.
func startBpftraceProc(b *testing.B) func() {
	cmd := bpftraceCommand(b)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 4096)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		n, _ := out.Read(buf)
		if strings.Contains(string(buf[:n]), "Attaching") {
			break
		}
	}
	go func() {
		for {
			if _, err := out.Read(buf); err != nil {
				return
			}
		}
	}()
	return func() { cmd.Process.Signal(syscall.SIGINT); cmd.Wait() }
}

// BenchmarkStorm: a non-blocking sender spinning on EAGAIN at full speed,
// traced: tcptrace's own CPU use (user+system, from /proc) and how many
// lines it printed per second (bounded by the interval, whatever the rate).
func BenchmarkStorm(b *testing.B) {
	ns := newNetns(b)
	const run = 5 * time.Second
	tr := startTracer(b, "-o", "json")
	h := startHelper(b, ns, "spin", run)
	cpu0 := procCPU(tr.cmd.Process.Pid)
	t0 := time.Now()
	res := h.run()
	cpu := procCPU(tr.cmd.Process.Pid) - cpu0
	wall := time.Since(t0)
	tr.stop(syscall.SIGINT)
	lines := len(tr.eventsFor("send_eagain", h.PID))
	eagains, _ := strconv.ParseFloat(res["eagains"], 64)
	pct := 100 * cpu.Seconds() / wall.Seconds()
	b.ReportMetric(pct, "%cpu-tcptrace")
	b.ReportMetric(float64(lines)/wall.Seconds(), "lines/s")
	benchReport(b, "EAGAIN storm", fmt.Sprintf("| EAGAINs/s | for | tcptrace CPU (one core) | lines printed | lines/s |\n|---|---|---|---|---|\n| %.0f | %v | %.2f%% | %d | %.1f |",
		eagains/wall.Seconds(), wall.Round(time.Millisecond), pct, lines, float64(lines)/wall.Seconds()))
}

// procCPU is a process's user+system time so far.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// Fields after the command: state is [0]; utime [11], stime [12].
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return time.Duration((ut + st) / 100 * float64(time.Second)) // USER_HZ = 100
}
