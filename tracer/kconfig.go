package tracer

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// kernelHZ returns CONFIG_HZ of the running kernel, or 0 if no config can be
// found. The kernel keeps RTOs, timer expiries and ACK times in jiffies; BPF
// cannot learn HZ by itself, and a guess would make every duration wrong by
// up to a factor of ten, so without it durations are left out.
func kernelHZ() uint64 {
	var uts unix.Utsname
	release := ""
	if unix.Uname(&uts) == nil {
		release = unix.ByteSliceToString(uts.Release[:])
	}
	for _, path := range []string{"/proc/config.gz", "/boot/config-" + release} {
		f, err := os.Open(path)
		if err != nil {
			continue
		}
		var r io.Reader = f
		if strings.HasSuffix(path, ".gz") {
			gz, err := gzip.NewReader(f)
			if err != nil {
				f.Close()
				continue
			}
			r = gz
		}
		hz := parseHZ(r)
		f.Close()
		if hz > 0 {
			return hz
		}
	}
	return 0
}

func parseHZ(r io.Reader) uint64 {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CONFIG_HZ="); ok {
			hz, err := strconv.ParseUint(v, 10, 32)
			if err == nil {
				return hz
			}
		}
	}
	return 0
}
