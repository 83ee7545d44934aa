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
	if s.Total(SendEAGAIN) != 42 || s.Total(SendBlocked) != 0 {
		t.Errorf("totals %d %d", s.Total(SendEAGAIN), s.Total(SendBlocked))
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
