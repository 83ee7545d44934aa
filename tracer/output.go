package tracer

import (
	"bufio"
	"fmt"
	"io"
	"time"
)

// Writer prints events in one of the output formats. Lines are buffered:
// one write(2) per line to a file or a pipe capped the event rate tcptrace
// could print without loss well below what its ring buffer delivers. Flush
// writes them out; Tracer.Run calls it whenever the ring buffer is drained,
// so a line still appears as soon as its event is read.
type Writer interface {
	Write(Event) error
	Flush() error
}

// NewWriter returns the writer for format "text" or "json".
func NewWriter(format string, w io.Writer) (Writer, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	switch format {
	case "text":
		return &textWriter{w: bw}, nil
	case "json":
		return &jsonWriter{w: bw}, nil
	}
	return nil, fmt.Errorf("unknown output format %q (known: text, json)", format)
}

const textHeader = "%-12s %7s %-15s %-18s %-22s %-21s %-21s %6s %s\n"

type textWriter struct {
	w      *bufio.Writer
	header bool
}

func (t *textWriter) Flush() error { return t.w.Flush() }

func (t *textWriter) Write(e Event) error {
	if !t.header {
		t.header = true
		if _, err := fmt.Fprintf(t.w, textHeader, "TIME", "PID", "COMM", "EVENT", "REASON", "LOCAL", "REMOTE", "COUNT", "EXPLANATION"); err != nil {
			return err
		}
	}
	_, err := fmt.Fprintf(t.w, textHeader, e.Time.Format("15:04:05.000"), fmt.Sprint(e.PID), e.Comm, e.Type, e.Reason,
		e.Local, e.Remote, fmt.Sprint(e.Count), e.Explanation)
	return err
}

// jsonEvent is the JSON contract, one object per line. Field names and
// meanings are stable; new details keys may be added.
type jsonEvent struct {
	Time        string         `json:"time"`
	Event       string         `json:"event"`
	Reason      string         `json:"reason"`
	PID         uint32         `json:"pid"`
	Comm        string         `json:"comm"`
	Family      int            `json:"family"`
	LAddr       string         `json:"laddr"`
	LPort       uint16         `json:"lport"`
	RAddr       string         `json:"raddr"`
	RPort       uint16         `json:"rport"`
	NetNS       uint32         `json:"netns"`
	Count       uint64         `json:"count"`
	Explanation string         `json:"explanation"`
	Details     map[string]any `json:"details"`
}

type jsonWriter struct {
	w    *bufio.Writer
	line []byte   // reused for every line
	keys []string // the details' keys, sorted; reused
}

func (j *jsonWriter) Flush() error { return j.w.Flush() }

func (j *jsonWriter) Write(e Event) error {
	var err error
	j.line, j.keys, err = appendJSON(j.line[:0], &e, j.keys)
	if err != nil {
		return fmt.Errorf("encoding an event as JSON: %w", err)
	}
	_, err = j.w.Write(j.line)
	return err
}

func toJSON(e Event) jsonEvent {
	return jsonEvent{
		Time:        e.Time.Format(time.RFC3339Nano),
		Event:       e.Type.String(),
		Reason:      string(e.Reason),
		PID:         e.PID,
		Comm:        e.Comm,
		Family:      e.Family,
		LAddr:       e.Local.Addr().String(),
		LPort:       e.Local.Port(),
		RAddr:       e.Remote.Addr().String(),
		RPort:       e.Remote.Port(),
		NetNS:       e.NetNS,
		Count:       e.Count,
		Explanation: e.Explanation,
		Details:     e.Details,
	}
}
