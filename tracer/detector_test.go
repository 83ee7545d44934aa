package tracer

import "testing"

func TestEventNamesRoundTrip(t *testing.T) {
	for _, e := range AllEventTypes() {
		got, err := ParseEventType(e.String())
		if err != nil || got != e {
			t.Errorf("%s: %v %v", e, got, err)
		}
	}
}
