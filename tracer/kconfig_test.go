package tracer

import (
	"strings"
	"testing"
)

func TestParseHZ(t *testing.T) {
	cfg := "# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\nCONFIG_SCHED_HRTICK=y\n"
	if got := parseHZ(strings.NewReader(cfg)); got != 250 {
		t.Errorf("got %d", got)
	}
	if got := parseHZ(strings.NewReader("CONFIG_HZ_1000=y\n")); got != 0 {
		t.Errorf("no CONFIG_HZ line: got %d", got)
	}
}
