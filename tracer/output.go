package tracer

import (
	"bufio"
	"fmt"
	"io"
	"time"
	"unicode"
	"unicode/utf8"
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

// NewWriter returns the writer for format "text", "json" or "none".
func NewWriter(format string, w io.Writer) (Writer, error) {
	return NewWriterContainers(format, w, false)
}

// NewWriterContainers is NewWriter whose text lines have a CONTAINER column
// (the container id's first 12 digits, "-" for a process in none) when
// containers is set: on a host that runs containers (HostRunsContainers).
func NewWriterContainers(format string, w io.Writer, containers bool) (Writer, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	switch format {
	case "text":
		return &textWriter{w: bw, containers: containers}, nil
	case "json":
		return &jsonWriter{w: bw}, nil
	case "none":
		return noWriter{}, nil
	}
	return nil, fmt.Errorf("unknown output format %q (known: text, json, none)", format)
}

// noWriter prints no lines: a run that only serves metrics, or only wants
// the summary.
type noWriter struct{}

func (noWriter) Write(Event) error { return nil }
func (noWriter) Flush() error      { return nil }

const textHeader = "%-12s %7s %-15s %-18s %-22s %-21s %-21s %6s %s\n"

type textWriter struct {
	w          *bufio.Writer
	header     bool
	containers bool
}

func (t *textWriter) Flush() error { return t.w.Flush() }

const textHeaderContainers = "%-12s %7s %-15s %-12s %-18s %-22s %-21s %-21s %6s %s\n"

func (t *textWriter) Write(e Event) error {
	if !t.header {
		t.header = true
		var err error
		if t.containers {
			_, err = fmt.Fprintf(t.w, textHeaderContainers, "TIME", "PID", "COMM", "CONTAINER", "EVENT", "REASON", "LOCAL", "REMOTE", "COUNT", "EXPLANATION")
		} else {
			_, err = fmt.Fprintf(t.w, textHeader, "TIME", "PID", "COMM", "EVENT", "REASON", "LOCAL", "REMOTE", "COUNT", "EXPLANATION")
		}
		if err != nil {
			return err
		}
	}
	// The explanation can quote a process name too (the peer's, in a
	// nagle_delack_stall).
	if t.containers {
		c := "-"
		if e.ContainerID != "" {
			c = e.ContainerID[:min(12, len(e.ContainerID))]
		}
		_, err := fmt.Fprintf(t.w, textHeaderContainers, e.Time.Format("15:04:05.000"), fmt.Sprint(e.PID), printable(e.Comm), c, e.Type,
			printable(string(e.Reason)), e.Local, e.Remote, fmt.Sprint(e.Count), printable(e.Explanation))
		return err
	}
	_, err := fmt.Fprintf(t.w, textHeader, e.Time.Format("15:04:05.000"), fmt.Sprint(e.PID), printable(e.Comm), e.Type,
		printable(string(e.Reason)), e.Local, e.Remote, fmt.Sprint(e.Count), printable(e.Explanation))
	return err
}

// printable returns s as it may be written to a terminal: printable
// characters (UTF-8 included) as they are; every other byte (control
// characters, DEL, bytes that are not UTF-8, and the bytes of a rune that
// does not print, such as U+202E, which reverses the text after it) as
// \xNN; a backslash as \\, so that the bytes of the original can be read
// back without ambiguity. Everything text output and the summary print that
// came from the kernel, /proc or a process must go through it: any process
// names itself (prctl(PR_SET_NAME), /proc/self/comm) with up to 15 bytes
// of its choice, and an ESC would otherwise reach the operator's terminal
// as a control sequence, a newline forge a line of output. ps prints '?'
// for such bytes instead, which loses them; JSON output escapes them its
// own way and does not use this.
func printable(s string) string {
	i := 0
	for i < len(s) {
		n, ok := printableAt(s, i)
		if !ok {
			break
		}
		i += n
	}
	if i == len(s) {
		return s // the common case, without allocating
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+16)
	b = append(b, s[:i]...)
	for i < len(s) {
		n, ok := printableAt(s, i)
		switch {
		case ok:
			b = append(b, s[i:i+n]...)
		case s[i] == '\\':
			b = append(b, '\\', '\\')
		default:
			for _, c := range []byte(s[i : i+n]) {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			}
		}
		i += n
	}
	return string(b)
}

// printableAt says how many bytes the character at s[i] takes (1 for a
// byte that is not UTF-8) and whether it can be printed as it is.
func printableAt(s string, i int) (int, bool) {
	if c := s[i]; c < utf8.RuneSelf {
		return 1, c >= ' ' && c < 0x7f && c != '\\'
	}
	r, n := utf8.DecodeRuneInString(s[i:])
	if r == utf8.RuneError && n == 1 {
		return 1, false
	}
	return n, unicode.IsPrint(r)
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
	Cgroup      string         `json:"cgroup,omitempty"`
	ContainerID string         `json:"container_id,omitempty"`
	PodUID      string         `json:"pod_uid,omitempty"`
	Pod         string         `json:"pod,omitempty"`
	PodNS       string         `json:"pod_namespace,omitempty"`
	Container   string         `json:"container,omitempty"`
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
		Cgroup:      e.Cgroup,
		ContainerID: e.ContainerID,
		PodUID:      e.PodUID,
		Pod:         e.Pod,
		PodNS:       e.PodNamespace,
		Container:   e.Container,
		Count:       e.Count,
		Explanation: e.Explanation,
		Details:     e.Details,
	}
}
