package tracer

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// appendJSON encodes one event as a line of the JSON contract (jsonEvent:
// same keys, same order, details sorted by key as encoding/json sorts map
// keys). Hand-written because encoding/json's reflection and its sorting of
// the details map were three quarters of tcptrace's CPU per JSON line; a
// details value of a type not handled here still goes through
// encoding/json. Strings are not HTML-escaped: nobody embeds these lines in
// HTML, and the decoded values are the same.
func appendJSON(b []byte, e *Event, keys []string) ([]byte, []string, error) {
	j := toJSON(*e)
	b = appendJSONString(append(b, `{"time":`...), j.Time)
	b = appendJSONString(append(b, `,"event":`...), j.Event)
	b = appendJSONString(append(b, `,"reason":`...), j.Reason)
	b = strconv.AppendUint(append(b, `,"pid":`...), uint64(j.PID), 10)
	b = appendJSONString(append(b, `,"comm":`...), j.Comm)
	b = strconv.AppendInt(append(b, `,"family":`...), int64(j.Family), 10)
	b = appendJSONString(append(b, `,"laddr":`...), j.LAddr)
	b = strconv.AppendUint(append(b, `,"lport":`...), uint64(j.LPort), 10)
	b = appendJSONString(append(b, `,"raddr":`...), j.RAddr)
	b = strconv.AppendUint(append(b, `,"rport":`...), uint64(j.RPort), 10)
	b = strconv.AppendUint(append(b, `,"netns":`...), uint64(j.NetNS), 10)
	// cgroup and container_id stay out of the loop below: its array is
	// built for every line, and six entries instead of four slowed it.
	if j.Cgroup != "" {
		b = appendJSONString(append(b, `,"cgroup":`...), j.Cgroup)
	}
	if j.ContainerID != "" {
		b = appendJSONString(append(b, `,"container_id":`...), j.ContainerID)
	}
	for _, kv := range [...]struct{ k, v string }{{`,"pod_uid":`, j.PodUID}, {`,"pod":`, j.Pod}, {`,"pod_namespace":`, j.PodNS}, {`,"container":`, j.Container}} {
		if kv.v != "" {
			b = appendJSONString(append(b, kv.k...), kv.v)
		}
	}
	b = strconv.AppendUint(append(b, `,"count":`...), j.Count, 10)
	b = appendJSONString(append(b, `,"explanation":`...), j.Explanation)
	b = append(b, `,"details":`...)
	if j.Details == nil {
		b = append(b, "null"...)
	} else {
		keys = keys[:0]
		for k := range j.Details {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendJSONValue(b, j.Details[k]); err != nil {
				return b, keys, err
			}
		}
		b = append(b, '}')
	}
	b = append(b, "}\n"...)
	return b, keys, nil
}

func appendJSONValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case string:
		return appendJSONString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int8:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int16:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int32:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case uint:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint8:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint16:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint32:
		return strconv.AppendUint(b, uint64(v), 10), nil
	case uint64:
		return strconv.AppendUint(b, v, 10), nil
	case float64:
		return appendJSONFloat(b, v, 64)
	case float32:
		return appendJSONFloat(b, float64(v), 32)
	case nil:
		return append(b, "null"...), nil
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return b, err
	}
	return append(b, enc...), nil
}

// appendJSONFloat writes what encoding/json writes: the shortest decimal
// that reads back as the same value, in exponent form only outside
// [1e-6, 1e21), with a two-digit exponent at least.
func appendJSONFloat(b []byte, f float64, bits int) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, &json.UnsupportedValueError{Str: strconv.FormatFloat(f, 'g', -1, bits)}
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	start := len(b)
	b = strconv.AppendFloat(b, f, format, -1, bits)
	if format == 'e' {
		// 1e-07 -> 1e-7: drop the exponent's leading zero, as
		// encoding/json does.
		n := len(b) - start
		if n >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b, nil
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s for JSON: quote, backslash and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, and U+2028/U+2029
// escaped as encoding/json does (JavaScript reads them as line ends).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
