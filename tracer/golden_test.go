package tracer

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// The JSON contract must not change byte for byte for the same event, nor the
// text line. These tests render decoded events, built from raw records laid
// out as the kernel writes them and passed through the decoder, and compare
// them with files written by an earlier version. After a deliberate change
// (a new details key), regenerate with go test ./tracer -run Golden -update
// and read the diff.
var update = flag.Bool("update", false, "rewrite tracer/testdata/golden from the current code")

func goldenDecode(c goldenCase) Event {
	hz := uint64(1000)
	if c.noHZ {
		hz = 0
	}
	d := &decoder{hz: hz, bootWall: goldenBoot, conn: goldenConnFacts(), fates: newSynFates()}
	for i := range c.before {
		d.decode(&c.before[i], tally{count: 1})
	}
	return d.decode(&c.raw, c.t)
}

// render is what tcptrace prints for the event: its JSON line, then its
// text line under the header.
func render(t *testing.T, e Event) []byte {
	var buf bytes.Buffer
	for _, format := range []string{"json", "text"} {
		w, err := NewWriter(format, &buf)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", name+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (generate with -update)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n got: %s\nwant: %s", name, path, got, want)
	}
}

func TestGoldenEvents(t *testing.T) {
	seen := map[string]bool{}
	types := map[EventType]bool{}
	for _, c := range goldenCases() {
		if seen[c.name] {
			t.Fatalf("two cases named %s", c.name)
		}
		seen[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			e := goldenDecode(c)
			types[e.Type] = true
			checkGolden(t, c.name, render(t, e))
		})
	}
	for _, et := range AllEventTypes() {
		if !types[et] {
			t.Errorf("no golden case for %s", et)
		}
	}
}

// TestGoldenSummary: the report at exit over every send case (a send still
// blocked left out) and the first case of each other event: fewer
// connections than the 20 it lists, which would otherwise be a random pick
// among ties.
func TestGoldenSummary(t *testing.T) {
	s := NewSummary()
	added := map[EventType]bool{}
	for _, c := range goldenCases() {
		e := goldenDecode(c)
		if added[e.Type] && e.Type != SendEAGAIN && e.Type != SendBlocked {
			continue
		}
		added[e.Type] = true
		s.Add(e)
	}
	var buf bytes.Buffer
	s.Write(&buf, map[EventType]uint64{SendEAGAIN: 2, DelayedACK: 0})
	checkGolden(t, "summary", sortTies(buf.Bytes()))
}

// sortTies puts the summary's connections of equal counts in a fixed order:
// Summary.Write sorts them by count only, so ties come in map order.
func sortTies(out []byte) []byte {
	lines := strings.SplitAfter(string(out), "\n")
	count := func(l string) string {
		f := strings.Fields(l)
		return f[len(f)-1]
	}
	in := false
	for i := 0; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "  by connection:") {
			in = true
			continue
		}
		if !in || !strings.Contains(lines[i], " -> ") {
			continue
		}
		j := i
		for j < len(lines) && strings.Contains(lines[j], " -> ") && count(lines[j]) == count(lines[i]) {
			j++
		}
		sort.Strings(lines[i:j])
		i = j - 1
	}
	return []byte(strings.Join(lines, ""))
}
