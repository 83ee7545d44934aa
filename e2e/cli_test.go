package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"
)

// A failure in loading that is not the user's doing exits 1; what the user
// can fix (here: a kernel without BTF) stays one line and exit 2. Both made
// real in a mount namespace of their own: /dev/null bound over the kernel's
// BTF (present, but nothing loads), or an empty tmpfs over its directory.
func TestLoadFailureExitCodes(t *testing.T) {
	for _, c := range []struct {
		name, mount string
		code        int
		want        string
	}{
		{"unreadable BTF", "mount --bind /dev/null /sys/kernel/btf/vmlinux", 1, "BTF"},
		{"no BTF", "mount -t tmpfs none /sys/kernel/btf", 2, "no kernel BTF: /sys/kernel/btf/vmlinux is missing"},
	} {
		cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", c.mount+` && exec "$0" -e send_eagain -d 1`, tcptraceBin)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.code {
			t.Errorf("%s: %v, want exit %d; output %q", c.name, err, c.code, out)
		}
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "tcptrace: ") || !strings.Contains(lines[0], c.want) {
			t.Errorf("%s: want one line naming %q, got %q", c.name, c.want, out)
		}
	}
}
