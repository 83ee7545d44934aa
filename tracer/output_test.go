package tracer

import (
	"bytes"
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"
)

func TestJSONContract(t *testing.T) {
	r := sampleRaw()
	e := (&decoder{hz: 1000, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 3})
	var buf bytes.Buffer
	w, err := NewWriter("json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(e); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 0 {
		t.Errorf("written before Flush: %q", buf.String())
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("want one line, got %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := "comm count details event explanation family laddr lport netns pid raddr reason rport time"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys:\n got %s\nwant %s", got, want)
	}
	if m["event"] != "send_eagain" || m["count"] != 3.0 || m["family"] != 4.0 || m["laddr"] != "10.0.0.1" || m["rport"] != 8080.0 {
		t.Errorf("values: %v", m)
	}
	if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	if d := m["details"].(map[string]any); d["sndbuf_bytes"] != 46080.0 {
		t.Errorf("details: %v", d)
	}
}

func TestTextColumns(t *testing.T) {
	r := sampleRaw()
	e := (&decoder{hz: 1000, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 1})
	var buf bytes.Buffer
	w, _ := NewWriter("text", &buf)
	w.Write(e)
	w.Write(e)
	w.Flush()
	lines := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME") {
		t.Fatalf("want header and two lines:\n%s", buf.String())
	}
	// Columns line up: the explanation starts where the header says.
	col := strings.Index(lines[0], "EXPLANATION")
	if !strings.HasPrefix(lines[1][col:], "send buffer full") {
		t.Errorf("explanation not at column %d:\n%s", col, buf.String())
	}
	if _, err := NewWriter("xml", &buf); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestSummaryCountsAndLost(t *testing.T) {
	r := sampleRaw()
	d := &decoder{hz: 1000}
	s := NewSummary()
	s.Add(d.decode(&r, tally{count: 1}))
	s.Add(d.decode(&r, tally{count: 41}))
	r.Type = uint8(SendBlocked)
	s.Add(d.decode(&r, tally{count: 1, inProgress: true}))
	if s.total(SendEAGAIN) != 42 || s.total(SendBlocked) != 0 {
		t.Errorf("totals %d %d", s.total(SendEAGAIN), s.total(SendBlocked))
	}
	var buf bytes.Buffer
	s.Write(&buf, map[EventType]uint64{SendEAGAIN: 5})
	out := buf.String()
	for _, want := range []string{"unacked_retransmitting", "42", "10.0.0.1:41000", "lost events: 5 send_eagain"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}

	buf.Reset()
	WriteSkipped(&buf, nil)
	if buf.Len() != 0 {
		t.Errorf("skipped runs reported when there were none: %q", buf.String())
	}
	WriteSkipped(&buf, map[string]uint64{"tp_timer_start": 3, "tp_inet_sock_set_state": 2})
	if got := buf.String(); !strings.Contains(got, "skipped runs: 2 of tp_inet_sock_set_state") || !strings.Contains(got, "skipped runs: 3 of tp_timer_start") ||
		strings.Index(got, "tp_inet") > strings.Index(got, "tp_timer") {
		t.Errorf("skipped runs, one line per program in name order:\n%s", got)
	}
}

func TestPrintable(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"nginx", "nginx"},
		{"kworker/u8:2", "kworker/u8:2"},
		{"my proc", "my proc"},
		{"", ""},
		{"\x1b[31mred", `\x1b[31mred`},
		{"a\nb", `a\x0ab`},
		{"a\tb", `a\x09b`},
		{"a\rb", `a\x0db`},
		{"del\x7f", `del\x7f`},
		{"nul\x00", `nul\x00`},
		{`C:\x1b`, `C:\\x1b`}, // a backslash in the name is not read back as an escape
		{"bad\xff\xfeutf8", `bad\xff\xfeutf8`},
		{"cut\xe2\x82", `cut\xe2\x82`}, // a multi-byte character cut short (comm keeps 15 bytes)
		{"\xc2\x9b31m", `\xc2\x9b31m`}, // U+009B, the C1 CSI: one character, not printable
		{"évian-µs", "évian-µs"},
		{"服务器", "服务器"},
		{"abc\u202eexe.txt", `abc\xe2\x80\xaeexe.txt`}, // right-to-left override
		{"\ufffd", "\ufffd"},                           // a real U+FFFD prints
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// A clean name is returned as it is: the text writer calls Printable on
// every line.
func TestPrintableDoesNotAllocateForCleanNames(t *testing.T) {
	s := "send buffer full (46592 of 46080 bytes queued), srtt 36 µs"
	if n := testing.AllocsPerRun(100, func() { printable(s) }); n != 0 {
		t.Errorf("%v allocations for a clean string", n)
	}
}

// A process named with an escape sequence and a newline: the text line and
// the summary show the name escaped, with no ESC byte and no second line.
func TestTextAndSummaryEscapeNames(t *testing.T) {
	r := sampleRaw()
	copy(r.Comm[:], "\x1b[31mx\n00:00:00")
	e := (&decoder{hz: 1000, bootWall: time.Unix(0, 0)}).decode(&r, tally{count: 1})
	e.Explanation = "peer pid 7 \x1b]0;owned\x07, ACK held 40 ms"
	var buf bytes.Buffer
	w, _ := NewWriter("text", &buf)
	w.Write(e)
	w.Flush()
	s := NewSummary()
	s.Add(e)
	s.Write(&buf, nil)
	out := buf.String()
	if strings.ContainsAny(out, "\x1b\x07") {
		t.Errorf("control characters in the output: %q", out)
	}
	lines := strings.Split(out, "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "00:00:00") {
			t.Errorf("forged line %q in %q", l, out)
		}
	}
	if !strings.Contains(lines[1], `4242 \x1b[31mx\x0a00:00:00 send_eagain`) || !strings.Contains(lines[1], `peer pid 7 \x1b]0;owned\x07, ACK held`) {
		t.Errorf("event line does not show the name escaped: %q", lines[1])
	}
	if !strings.Contains(out, `4242 \x1b[31mx\x0a00:00:00 10.0.0.1:41000`) {
		t.Errorf("summary does not show the name escaped: %q", out)
	}
}

// On a host with containers the text lines name each line's container by
// the first 12 digits of its id, "-" for a process in none.
func TestTextContainerColumn(t *testing.T) {
	var b strings.Builder
	w, err := NewWriterContainers("text", &b, true)
	if err != nil {
		t.Fatal(err)
	}
	e := Event{Type: SynDrop, Reason: reasonAcceptQueueFull, PID: 42, Comm: "nginx", Count: 1,
		ContainerID: "3f1d5a0c2b7e4f6a8d9c0b1a2e3f4d5c6b7a8e9f0d1c2b3a4e5f6d7c8b9a0e1f"}
	w.Write(e)
	e.ContainerID = ""
	w.Write(e)
	w.Flush()
	lines := strings.Split(b.String(), "\n")
	if f := strings.Fields(lines[0]); len(f) < 4 || f[3] != "CONTAINER" {
		t.Errorf("header %q", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) < 4 || f[3] != "3f1d5a0c2b7e" || f[4] != "syn_drop" {
		t.Errorf("line in a container %q", lines[1])
	}
	if f := strings.Fields(lines[2]); len(f) < 4 || f[3] != "-" {
		t.Errorf("line in none %q", lines[2])
	}
	var plain strings.Builder
	w, _ = NewWriter("text", &plain)
	w.Write(e)
	w.Flush()
	if strings.Contains(plain.String(), "CONTAINER") {
		t.Errorf("a host without containers has no CONTAINER column:\n%s", plain.String())
	}
}
