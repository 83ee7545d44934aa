package tracer

import (
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The user-space cost per event: copy out of the ring buffer, decode,
// classify, explain, format. Run with `make bench`.
// With metrics, each event is also counted in the Prometheus sink.
func benchmarkPipeline(b *testing.B, format string, metrics bool) {
	r := sampleRaw()
	sample := rawBytes(&r)
	d := &decoder{hz: 1000, bootWall: time.Now()}
	w, err := NewWriter(format, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	var m *Metrics
	if metrics {
		m = NewMetrics(nil, "bench", DefaultMaxSeries)
	}
	var raw tcptraceEvent
	b.ReportAllocs()
	for b.Loop() {
		if err := parseRaw(sample, &raw); err != nil {
			b.Fatal(err)
		}
		e := d.decode(&raw, tally{count: 1})
		if m != nil {
			m.Add(e)
		}
		if err := w.Write(e); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventToText(b *testing.B)           { benchmarkPipeline(b, "text", false) }
func BenchmarkEventToJSON(b *testing.B)           { benchmarkPipeline(b, "json", false) }
func BenchmarkEventToMetrics(b *testing.B)        { benchmarkPipeline(b, "none", true) }
func BenchmarkEventToTextAndMetrics(b *testing.B) { benchmarkPipeline(b, "text", true) }

// The sink at the default series cap, filled by delayed ACKs of as many
// process names (each a counter series and a histogram series, the
// heaviest kind): the heap it holds then, measured from before it was made,
// and per 1,000 series. Then every event a new name, refused: the cost of
// a refusal, and the heap stays that of the cap's series.
func BenchmarkMetricsAtCap(b *testing.B) {
	e := Event{Type: DelayedACK, Reason: reasonPingpong, Count: 1,
		tally: tally{count: 1, wait: 40 * time.Millisecond}, delack: delackState{heldKnown: true}}
	var before, full, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := NewMetrics(nil, "bench", DefaultMaxSeries)
	for i := 0; len(m.series) < DefaultMaxSeries; i++ {
		e.Comm = strconv.Itoa(i)
		m.Add(e)
	}
	if got := testutil.CollectAndCount(m.byName["delayed_ack_hold"]); got != DefaultMaxSeries/2 {
		b.Fatalf("%d histogram series at the cap, want %d", got, DefaultMaxSeries/2)
	}
	runtime.GC()
	runtime.ReadMemStats(&full)
	held := float64(full.HeapAlloc) - float64(before.HeapAlloc)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		e.Comm = strconv.Itoa(DefaultMaxSeries + i%100000)
		m.Add(e)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	// (Reported after the loop: b.Loop's start deletes reported metrics.)
	b.ReportMetric(held/1e6, "MB-held")
	b.ReportMetric(held/1e3/(DefaultMaxSeries/1000), "kB/1000-series")
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/1e6, "MB-held-after")
}
