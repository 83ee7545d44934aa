package tracer

import (
	"io"
	"testing"
	"time"
)

// The user-space cost per event: copy out of the ring buffer, decode,
// classify, explain, format. Run with `make bench`.
func benchmarkPipeline(b *testing.B, format string) {
	r := sampleRaw()
	sample := rawBytes(&r)
	d := &decoder{hz: 1000, bootWall: time.Now()}
	w, err := NewWriter(format, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	var raw tcptraceEvent
	b.ReportAllocs()
	for b.Loop() {
		if err := parseRaw(sample, &raw); err != nil {
			b.Fatal(err)
		}
		if err := w.Write(d.decode(&raw, tally{count: 1})); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventToText(b *testing.B) { benchmarkPipeline(b, "text") }
func BenchmarkEventToJSON(b *testing.B) { benchmarkPipeline(b, "json") }
