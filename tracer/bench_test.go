package tracer

import (
	"io"
	"runtime"
	"strconv"
	"testing"
	"time"
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

// The sink at its series cap: every event a new process name, refused
// (the memory it holds stays that of the cap's series).
func BenchmarkMetricsAtCap(b *testing.B) {
	m := NewMetrics(nil, "bench", 1000)
	e := Event{Type: SynDrop, Reason: reasonAcceptQueueFull, Count: 1}
	for i := range 1000 {
		e.Comm = strconv.Itoa(i)
		m.Add(e)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		e.Comm = strconv.Itoa(1000 + i%100000)
		m.Add(e)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc)/1e6, "MB-heap")
}
