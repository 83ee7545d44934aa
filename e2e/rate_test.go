package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkEventRate: the highest rate of events tcptrace prints without
// losing one, text to a file and JSON to a pipe. The events are real: a
// process making refused connect()s on loopback, each to a new destination,
// so that each is a connect_refused of its own (tcptrace aggregates per
// destination) and one record through the ring buffer. The rate steps up
// until tcptrace reports lost records or the sender cannot go faster; every
// step checks that the lines printed are the refused connects made. It
// reports; it asserts nothing about time.
func BenchmarkEventRate(b *testing.B) {
	ns := newNetns(b)
	const run = 3 * time.Second
	var rows, highest []string
	for _, sink := range []string{"text to a file", "json to a pipe"} {
		best := 0.0
		for _, rate := range []int{10000, 25000, 50000, 100000, 200000, 10000000} {
			st := runAtRate(b, ns, sink, rate, run)
			rows = append(rows, fmt.Sprintf("| %s | %d | %.0f | %d | %d | %d | %.0f%% |",
				sink, rate, st.rate, st.refused, st.lines, st.lost, st.cpuPct))
			if st.lost > 0 || st.lines != st.refused {
				break
			}
			best = st.rate
			if st.rate < 0.9*float64(rate) {
				break // the sender's own limit: tcptrace kept up with all of it
			}
		}
		b.ReportMetric(best, "events/s-zero-lost-"+strings.Fields(sink)[0])
		highest = append(highest, fmt.Sprintf("%s %.0f/s", sink, best))
	}
	benchReport(b, "Events printed without loss (-e connect_refused, one event per refused connect)",
		"Highest rate with every event printed and none lost: "+strings.Join(highest, ", ")+
			".\n\n| output | asked/s | made/s | refused | lines | lost | tcptrace CPU |\n|---|---|---|---|---|---|---|\n"+strings.Join(rows, "\n"))
}

type rateStep struct {
	rate           float64
	refused, lines uint64
	lost           uint64
	cpuPct         float64
}

var lostLine = regexp.MustCompile(`lost events: (\d+)`)

func runAtRate(b *testing.B, ns *netns, sink string, rate int, run time.Duration) rateStep {
	b.Helper()
	format := "text"
	if strings.HasPrefix(sink, "json") {
		format = "json"
	}
	args := []string{"-e", "connect_refused", "-o", format}
	if forcePath != "" {
		args = append(args, "--force-path", forcePath)
	}
	cmd := exec.Command(tcptraceBin, args...)
	var stderr syncBuffer
	cmd.Stderr = &stderr
	var lines uint64
	var counted sync.WaitGroup
	var file *os.File
	if format == "text" {
		f, err := os.CreateTemp("", "tcptrace-rate-*.txt")
		if err != nil {
			b.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		cmd.Stdout, file = f, f
	} else {
		out, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		counted.Add(1)
		go func() {
			defer counted.Done()
			lines = countLines(out)
		}()
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Process.Kill()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), "tracing"); {
		if time.Now().After(deadline) {
			b.Fatalf("tcptrace did not start: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Two senders: one process tops out near 35k refused connects a
	// second on this 2-vCPU machine while tcptrace runs.
	const senders = 2
	var hs []*helperProc
	for i := 0; i < senders; i++ {
		hs = append(hs, startHelper(b, ns, "refuse", run, helperRateEnv+"="+strconv.Itoa(rate/senders), helperSenderEnv+"="+strconv.Itoa(i)))
	}
	cpu0 := procCPU(cmd.Process.Pid)
	t0 := time.Now()
	for _, h := range hs {
		fmt.Fprintln(h.stdin, "GO")
	}
	var results []map[string]string
	for _, h := range hs {
		results = append(results, h.line("RESULT"))
		if err := h.cmd.Wait(); err != nil {
			b.Fatalf("helper: %v", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // what the ring buffer still holds
	cpu := procCPU(cmd.Process.Pid) - cpu0
	wall := time.Since(t0)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		b.Fatalf("tcptrace: %v\n%s", err, stderr.String())
	}
	counted.Wait()
	if file != nil {
		if _, err := file.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		lines = countLines(file) - 1 // the header
	}
	var st rateStep
	for _, res := range results {
		r, _ := strconv.ParseFloat(res["rate"], 64)
		n, _ := strconv.ParseUint(res["refused"], 10, 64)
		st.rate += r
		st.refused += n
	}
	st.lines = lines
	st.cpuPct = 100 * cpu.Seconds() / wall.Seconds()
	m := lostLine.FindAllStringSubmatch(stderr.String(), -1)
	if m == nil {
		b.Fatalf("tcptrace's summary has no lost-events line:\n%s", stderr.String())
	}
	for _, g := range m {
		n, _ := strconv.ParseUint(g[1], 10, 64)
		st.lost += n
	}
	return st
}

func countLines(r io.Reader) uint64 {
	var n uint64
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 1<<20)
	for {
		k, err := br.Read(buf)
		n += uint64(bytes.Count(buf[:k], []byte{'\n'}))
		if err != nil {
			return n
		}
	}
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
