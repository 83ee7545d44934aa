package tracer

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"
)

// The hand-written encoder must write what encoding/json writes (without
// HTML escaping), byte for byte: the JSON contract is encoding/json's.
func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	d := &decoder{hz: 250, bootWall: time.Unix(1700000000, 123456789)}
	var events []Event
	for _, typ := range AllEventTypes() {
		r := sampleRaw()
		r.Type = uint8(typ)
		events = append(events, d.decode(&r, tally{count: 7, wait: 43 * time.Millisecond, maxWait: 45 * time.Millisecond}))
	}
	odd := events[0]
	odd.Comm = "a\"b\\c\nd\te\x01f\x7fg"
	odd.Explanation = "bad utf-8 \xff\xfe, line separators \u2028\u2029, é, 中, <tag> & more"
	odd.Details = map[string]any{
		"f_small": 1e-7, "f_big": 1e21, "f_mid": 44.636, "f_zero": 0.0, "f_neg": -0.5, "f_int": 3.0,
		"f32": float32(0.1), "i": -3, "i8": int8(-8), "u8": uint8(8), "u16": uint16(16), "i16": int16(-16),
		"i32": int32(-32), "u32": uint32(32), "i64": int64(math.MinInt64), "u64": uint64(math.MaxUint64),
		"u": uint(1), "b": true, "s": "x", "nil": nil, "list": []string{"a", "b"},
		"dur": 3 * time.Millisecond, "e_1e-10": 1e-10, "e_1e100": 1e100,
	}
	inPod := events[1]
	inPod.Cgroup = "/kubepods.slice/kubepods-pod7e2b1f04_8c3d.slice/cri-containerd-3f1d.scope"
	inPod.ContainerID, inPod.PodUID = "3f1d", "7e2b1f04-8c3d"
	inPod.Pod, inPod.PodNamespace, inPod.Container = "web-0", "shop", "nginx"
	inContainer := events[2]
	inContainer.Cgroup, inContainer.ContainerID = "/system.slice/docker-ab\"c.scope", "ab\"c"
	events = append(events, odd, inPod, inContainer, Event{Type: SendEAGAIN})
	for _, e := range events {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(toJSON(e)); err != nil {
			t.Fatal(err)
		}
		got, _, err := appendJSON(nil, &e, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s:\n got %s\nwant %s", e.Type, got, want.Bytes())
		}
	}
	bad := events[0]
	bad.Details = map[string]any{"x": math.NaN()}
	if _, _, err := appendJSON(nil, &bad, nil); err == nil {
		t.Error("NaN encoded")
	}
}
