package e2e

import (
	"bufio"
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
	b.Logf("exec to tracing: median %v (runs %v); peak RSS median %d kB", med, startups, rssKB[len(rssKB)/2])
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
