package e2e

import (
	"bufio"
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

// BenchmarkStartup measures what an SRE waits for: from exec to the
// `tracing` line (every detector loaded and attached, existing sockets
// learned), and tcptrace's peak resident memory once tracing. It reports
// the median of the runs; it asserts nothing about time.
func BenchmarkStartup(b *testing.B) {
	var startups []time.Duration
	var rssKB []int
	for i := 0; i < max(b.N, 5); i++ {
		cmd := exec.Command(tcptraceBin, "-o", "json")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "tracing") {
				break
			}
		}
		startups = append(startups, time.Since(start))
		rssKB = append(rssKB, peakRSS(cmd.Process.Pid))
		cmd.Process.Signal(syscall.SIGINT)
		go func() {
			for sc.Scan() {
			}
		}()
		cmd.Wait()
	}
	sort.Slice(startups, func(i, j int) bool { return startups[i] < startups[j] })
	sort.Ints(rssKB)
	med := startups[len(startups)/2]
	b.ReportMetric(float64(med.Milliseconds()), "ms-to-tracing")
	b.ReportMetric(float64(rssKB[len(rssKB)/2])/1024, "MB-peak-RSS")
	table := fmt.Sprintf("| tool | exec to tracing, median of %d | runs | peak RSS |\n|---|---|---|---|\n| tcptrace (every event) | %d ms | %s | %.1f MB |",
		len(startups), med.Milliseconds(), msList(startups), float64(rssKB[len(rssKB)/2])/1024)
	if bt := bpftraceStartups(b, 5); len(bt) > 0 {
		table += fmt.Sprintf("\n| bpftrace (the comparison script) | %d ms | %s | |", bt[len(bt)/2].Milliseconds(), msList(bt))
		b.ReportMetric(float64(bt[len(bt)/2].Milliseconds()), "ms-to-tracing-bpftrace")
	}
	benchReport(b, "Start-up", table)
}

func msList(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, strconv.FormatInt(d.Milliseconds(), 10))
	}
	return strings.Join(s, ", ")
}

// bpftraceStartups times the comparison script from exec until all of its
// programs are loaded in the kernel, sorted. bpftrace prints nothing once
// attached, and attaching follows loading: a lower bound of its start-up.
func bpftraceStartups(b *testing.B, runs int) []time.Duration {
	if _, err := exec.LookPath("bpftrace"); err != nil {
		return nil
	}
	var out []time.Duration
	for i := 0; i < runs; i++ {
		before := allPrograms(b)
		cmd := bpftraceCommand(b)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for time.Since(start) < 30*time.Second {
			n := 0
			for id := range allPrograms(b) {
				if _, old := before[id]; !old {
					n++
				}
			}
			if n >= bpftracePrograms {
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		out = append(out, time.Since(start))
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// peakRSS reads VmHWM of a process, in kB.
func peakRSS(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}
