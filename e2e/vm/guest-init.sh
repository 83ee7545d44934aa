#!/bin/sh
# guest-init.sh: PID 1 of the QEMU guest, run by /bin/sh = dash (POSIX sh:
# the guest has no bash; busybox provides the other tools). run.sh copies it into the initramfs as /init, next to
# /vmtest.conf, /tcptrace and (if built) /e2e.test.
#
# It sets up what tcptrace and its e2e tests expect from a normal system,
# runs the smoke step and the e2e suite once per requested probe path, prints
# machine-readable lines that run.sh parses from the serial console:
#
#   VMTEST kernel=<release> step=<step> ...            progress and timings
#   VMTEST kernel=<release> smoke=<path> event=<event> via=<path|none|n/a>
#   VMTEST kernel=<release> smoke=<path> result=PASS|PARTIAL|FAIL|UNSUPPORTED
#   VMTEST kernel=<release> path=<path> test=<TestX> result=PASS|FAIL|SKIP
#   VMTEST kernel=<release> path=<path> result=PASS|FAIL|SKIP
#   VMTEST kernel=<release> path=<path> crash=signal-<n> test=<TestX> rerun=<tests>
#                                      (the test binary died; the tests it
#                                      had not finished ran once more)
#   VMTEST kernel=<release> done
#
# and powers the VM off. A missing "done" line means the guest crashed or
# timed out; run.sh treats that as a failure.
#
# No `set -e`: one failing step must not kill PID 1 (that panics the kernel
# and loses the remaining results).

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
# SeaBIOS leaves "Booting from ROM.." without a newline on the console: end
# that line so our first VMTEST line starts at column 0.
echo
export HOME=/root TMPDIR=/tmp

# --- filesystems -----------------------------------------------------------
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# /tmp and /run writable; `ip netns add` wants /run/netns (/var/run -> /run is
# a symlink in the initramfs).
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns
# tracefs: cilium/ebpf creates kprobes through tracefs when the kprobe PMU
# cannot be used; debugfs too, for tools that look at /sys/kernel/debug/tracing.
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null

# Keep kernel chatter (KERN_WARNING and below) off the serial console so it
# does not interleave with result lines; run.sh prints dmesg on failure.
echo 3 >/proc/sys/kernel/printk

. /vmtest.conf
rel=$(uname -r)
say() { echo "VMTEST kernel=$rel $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

say "step=init uptime=$(uptime_s)"

# --- network and modules ---------------------------------------------------
ip link set lo up

# Debian builds veth, nf_tables, nft_*, netem... as modules. The kernel also
# autoloads them on demand through /sbin/modprobe (kmod), but loading the
# common ones up front makes "is X available" checks in tests reliable.
for m in $VM_MODULES; do
	modprobe -q "$m" 2>/dev/null || echo "vmtest: modprobe $m failed"
done

# Environment check: one line saying what the tests can use in this guest.
env_veth=no env_nft=no env_netns=no
ip link add vmtest0 type veth peer name vmtest1 2>/dev/null && env_veth=yes && ip link del vmtest0
nft add table inet vmtest 2>/dev/null && env_nft=yes && nft delete table inet vmtest
ip netns add vmtest 2>/dev/null && ip netns exec vmtest ip link set lo up 2>/dev/null && env_netns=yes
ip netns del vmtest 2>/dev/null
env_btf=no; [ -r /sys/kernel/btf/vmlinux ] && env_btf=yes
env_kprobe_pmu=no; [ -d /sys/bus/event_source/devices/kprobe ] && env_kprobe_pmu=yes
say "step=env uptime=$(uptime_s) btf=$env_btf kprobe_pmu=$env_kprobe_pmu veth=$env_veth nft=$env_nft netns=$env_netns hz=$(sed -n 's/^CONFIG_HZ=//p' /boot/config-"$rel")"

# Kernels before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK, whose
# default is 64 KiB for PID 1 and its children there: the kernel's default,
# left as it is so that a missing rlimit.RemoveMemlock() shows up on 5.10.
# TCPTRACE_VM_MEMLOCK (e.g. unlimited) sets it to get past that.
if [ -n "$VM_MEMLOCK" ]; then
	ulimit -l "$VM_MEMLOCK" || echo "vmtest: ulimit -l $VM_MEMLOCK failed"
fi
say "step=limits memlock=$(ulimit -l)"

# --- smoke: which probe paths load and attach ------------------------------
# Per path: PASS (every event attaches), PARTIAL (some do), UNSUPPORTED (none
# does); for fentry and kprobe, PARTIAL and UNSUPPORTED become FAIL when the
# kernel config says the kernel supports that path, so a verifier rejection
# is not hidden; for auto, UNSUPPORTED (tcptrace cannot start) is a FAIL.
kconf() { grep -q "^$1=y" /boot/config-"$rel"; }
expected() {
	case $1 in
	auto) return 0 ;;
	fentry) kconf CONFIG_DEBUG_INFO_BTF && kconf CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS ;;
	kprobe) kconf CONFIG_KPROBES && kconf CONFIG_KPROBE_EVENTS ;;
	*) return 1 ;; # tracepoint: depends on the tracepoints each event needs
	esac
}
failed=0
for p in auto fentry kprobe tracepoint; do
	if [ "$p" = auto ]; then set -- --list-probes; else set -- --list-probes --force-path "$p"; fi
	echo "VMTEST-SMOKE-BEGIN path=$p cmd=/tcptrace $*"
	/tcptrace "$@" >/tmp/smoke 2>&1
	rc=$?
	cat /tmp/smoke
	echo "VMTEST-SMOKE-END path=$p rc=$rc"
	# --list-probes prints "<event>[,<event>] <path> <hooks>" per event, then
	# indented "not <path> (...): unsupported|error: why" lines; path "none"
	# means the event cannot be traced that way here. When every reason is
	# "unsupported" (the kernel lacks a hook, an argument, a feature; or the
	# event has no such path by design) the event is "n/a", not a miss; an
	# "error" (a verifier rejection) is a miss.
	awk '
		function flush() {
			if (ev != "") { if (via == "none" && !bad) via = "n/a"; print ev, via }
			ev = ""
		}
		/^[a-z_,]+ +[a-z]+ / { flush(); ev = $1; via = $2; bad = 0; next }
		/^[ \t]+not / && via == "none" && index($0, "): unsupported: ") == 0 { bad = 1 }
		END { flush() }' /tmp/smoke >/tmp/smoke.events
	while read -r ev via; do say "smoke=$p event=$ev via=$via"; done </tmp/smoke.events
	if [ $rc -ne 0 ] || ! grep -qv ' n/a$' /tmp/smoke.events; then
		r=UNSUPPORTED # tcptrace failed, or the kernel supports no event this way
	elif grep -q ' none$' /tmp/smoke.events; then
		r=PARTIAL # an event failed for a reason other than a missing feature
	else
		r=PASS # every event attaches, or the kernel lacks what it needs (n/a)
	fi
	# Where the kernel has what the path needs, anything short of every
	# event attaching is a bug (verifier rejection, bad CO-RE...), not a
	# missing kernel feature. Automatic choice: only nothing at all is.
	if [ $r = UNSUPPORTED ] && expected "$p"; then r=FAIL; fi
	if [ $r = PARTIAL ] && [ "$p" != auto ] && expected "$p"; then r=FAIL; fi
	say "smoke=$p result=$r"
	[ $r = FAIL ] && failed=1
	eval "smoke_$p=$r"
done
say "step=smoke-done uptime=$(uptime_s)"

# --- e2e suite, once per requested path ------------------------------------
if [ -n "$VM_PATHS" ] && [ ! -x /e2e.test ]; then
	echo "vmtest: paths requested but /e2e.test is missing"
	failed=1
fi
# run_e2e LOG ARGS...: the e2e suite on path $force, output to the console
# and LOG. The rc goes through /tmp/rc: busybox ash pipelines return the
# status of the last command (tee), and we want the output on the console live.
run_e2e() {
	out=$1
	shift
	(
		cd /e2e && TCPTRACE_BIN=/tcptrace TCPTRACE_FORCE_PATH=$force TCPTRACE_E2E_KERNEL_MATRIX=1 \
			/e2e.test -test.v -test.timeout "$VM_TEST_TIMEOUT" "$@" 2>&1
		echo $? >/tmp/rc
	) | tee "$out"
}
if [ -x /e2e.test ]; then
	mkdir -p /e2e
	for p in $VM_PATHS; do
		force=$p
		[ "$p" = auto ] && force=
		# Forcing a path this kernel cannot attach at all makes every test
		# fail the same way; report it as not supported instead.
		if [ "$(eval echo "\$smoke_$p")" = UNSUPPORTED ] && [ "$VM_RUN_UNSUPPORTED" != 1 ]; then
			say "path=$p result=SKIP reason=unsupported"
			continue
		fi
		say "step=e2e-start path=$p uptime=$(uptime_s)"
		log=/tmp/e2e-$p.log
		run_e2e "$log" $VM_TEST_ARGS
		rc=$(cat /tmp/rc)
		if [ "$rc" -gt 128 ]; then
			# The test binary itself died of a signal (no test failed: a
			# failure exits 1): say so with the test it was in, and run the
			# tests it never finished once more, so one crash of the
			# emulated machine does not hide the rest of the path.
			crashed_in=$(sed -n 's/^=== RUN   \([^/]*\)$/\1/p' "$log" | tail -n 1)
			sed -nE 's/^--- (PASS|FAIL|SKIP): ([^ ]*).*/\2/p' "$log" >/tmp/finished
			listed=${VM_TEST_ARGS#-test.run=}
			TCPTRACE_BIN=/tcptrace /e2e.test -test.list "${listed:-.}" | grep "^Test" >/tmp/listed
			# (busybox grep -v -f of an empty file drops every line)
			[ -s /tmp/finished ] || echo "-" >/tmp/finished
			left=$(grep -vxF -f /tmp/finished /tmp/listed | tr '\n' '|' | sed 's/|$//')
			say "path=$p crash=signal-$((rc - 128)) test=$crashed_in rerun=$(echo "$left" | tr '|' ' ' | wc -w) uptime=$(uptime_s)"
			dmesg | tail -n 40
			if [ -n "$left" ]; then
				run_e2e "$log.rerun" "-test.run=^($left)\$"
				cat "$log.rerun" >>"$log"
				rc=$(cat /tmp/rc)
				# A second crash is a failure whatever it hit.
				[ "$rc" -gt 128 ] && say "path=$p crash=signal-$((rc - 128)) rerun=failed"
			fi
			# The first run's failures still count.
			grep -q '^--- FAIL' "$log" && [ "$rc" = 0 ] && rc=1
		fi
		# Per-test lines (subtests included, indented in go test -v output).
		sed -nE 's/^ *--- (PASS|FAIL|SKIP): ([^ ]*).*/\1 \2/p' "$log" |
			while read -r res name; do say "path=$p test=$name result=$res"; done
		if [ "$rc" != 0 ]; then
			r=FAIL
			failed=1
		elif grep -q '^--- PASS' "$log" || ! grep -q '^--- SKIP' "$log"; then
			r=PASS
		else
			r=SKIP # every top-level test skipped: the path is not supported here
		fi
		say "path=$p result=$r rc=$rc uptime=$(uptime_s)"
	done
fi

if [ $failed -ne 0 ]; then
	echo "VMTEST-DMESG-BEGIN"
	dmesg | tail -n 60
	echo "VMTEST-DMESG-END"
fi
say "done"
sync
poweroff -f
