#!/usr/bin/env bash
# run.sh KERNEL [PATH...]: boot a Debian cloud kernel under QEMU and run
# tcptrace's smoke step and e2e suite inside it.
#
#   KERNEL  5.10 (bullseye), 6.1 (bookworm) or 6.12 (trixie)
#   PATH    tracepoint, fentry, kprobe or auto (TCPTRACE_FORCE_PATH empty);
#           default: tracepoint fentry kprobe if the e2e package exists,
#           none (smoke step only) otherwise. "smoke" alone means smoke only.
#
# Why a VM: a kernel offers only the probe paths its build and lockdown allow
# (the development machine's 6.18 refuses fentry with EPERM and has no
# kprobes), and each path must be exercised on the kernels that may pick it.
# Why TCG, not KVM: KVM guests hang on the development machine, itself a
# guest; TCG needs no /dev/kvm (slow but works).
#
# Everything downloaded or built lives under $TCPTRACE_VM_CACHE
# (default /var/cache/tcptrace-vmtest), never in the repository.
#
# Environment knobs:
#   TCPTRACE_VM_CACHE         cache dir (default /var/cache/tcptrace-vmtest)
#   TCPTRACE_VM_TIMEOUT       host-side QEMU timeout in seconds
#                             (default 300 + 1260 per e2e path)
#   TCPTRACE_VM_TEST_TIMEOUT  go test -test.timeout inside the guest (20m)
#   TCPTRACE_VM_TEST_RUN      go test -test.run regexp
#   TCPTRACE_VM_BENCH         go test -test.bench regexp, instead of the tests
#                             (one iteration each): a benchmark's figures on a
#                             path this machine cannot attach (BenchmarkChurn:
#                             tcptrace's programs against empty ones on the
#                             same fentry, kprobe or tracepoint hooks)
#   TCPTRACE_VM_MEM           guest memory in MiB (1024)
#   TCPTRACE_VM_TCG_THREAD    single (default: the vCPUs take turns on one host
#                             thread) or multi (a host thread per vCPU)
#   TCPTRACE_VM_MODULES       modules loaded at boot (see default below)
#   TCPTRACE_VM_VERBOSE=1     stream the whole console, not only VMTEST lines
#   TCPTRACE_VM_MEMLOCK       `ulimit -l` value for the tests in the guest
#                             (default: the kernel's, 64 KiB on 5.10, which
#                             kernels before 5.11 charge BPF memory to)
#   TCPTRACE_VM_RUN_UNSUPPORTED=1
#                             run the e2e suite for a forced path even when the
#                             smoke step found it unsupported on this kernel
#                             (it is reported as SKIP otherwise)
#   TCPTRACE_VM_TCPTRACE, TCPTRACE_VM_E2E
#                             use these prebuilt static binaries instead of
#                             building ./cmd/tcptrace and ./e2e
#
# Exit status: 0 if no smoke or e2e result is FAIL (PASS, PARTIAL, SKIP and
# UNSUPPORTED are fine: see guest-init.sh for when a path counts as FAIL)
# and the guest reached the end; 1 otherwise; 2 on usage errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TCPTRACE_VM_CACHE:-/var/cache/tcptrace-vmtest}

# Bump when the layout of cached kernel/initramfs pieces changes, so stale
# pieces built by an older run.sh are rebuilt rather than reused.
cache_format=1

usage() {
	sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
	exit 2
}
log() { echo "run.sh: $*" >&2; }
die() {
	log "$*"
	exit 1
}

(($# >= 1)) || usage
kernel=$1
shift
case $kernel in
5.10 | 6.1 | 6.12) ;;
*) usage ;;
esac

# --- which e2e paths ----------------------------------------------------------
have_e2e_pkg=no
if [[ -n ${TCPTRACE_VM_E2E:-} ]] || compgen -G "$repo/e2e/*_test.go" >/dev/null; then
	have_e2e_pkg=yes
fi
paths=()
if (($# == 0)); then
	[[ $have_e2e_pkg == yes ]] && paths=(tracepoint fentry kprobe)
elif [[ $# -eq 1 && $1 == smoke ]]; then
	paths=()
else
	for p in "$@"; do
		case $p in
		tracepoint | fentry | kprobe | auto) paths+=("$p") ;;
		*) usage ;;
		esac
	done
	[[ $have_e2e_pkg == yes ]] || die "no e2e package ($repo/e2e/*_test.go): only the smoke step can run"
fi

"$here/deps.sh"

mkdir -p "$cache"
# One run at a time touches the shared apt state and kernel pieces.
exec 9>"$cache/.lock"
flock 9

# --- private apt configuration -------------------------------------------------
# Never the machine's apt state: its own sources.list (Debian mirror host the
# machine already uses, all three suites plus their security suites, where the
# newest kernels are), lists, cache, and no apt.conf.d / preferences.
aptdir=$cache/apt
mkdir -p "$aptdir"/{lists/partial,archives/partial,sources.d,conf.d,prefs.d}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=http://deb.debian.org
cat >"$aptdir/sources.list.new" <<EOF
deb [signed-by=$keyring] $mirror/debian bullseye main
deb [signed-by=$keyring] $mirror/debian-security bullseye-security main
deb [signed-by=$keyring] $mirror/debian bookworm main
deb [signed-by=$keyring] $mirror/debian-security bookworm-security main
deb [signed-by=$keyring] $mirror/debian trixie main
deb [signed-by=$keyring] $mirror/debian-security trixie-security main
EOF
if ! cmp -s "$aptdir/sources.list.new" "$aptdir/sources.list"; then
	mv "$aptdir/sources.list.new" "$aptdir/sources.list"
	rm -f "$aptdir/updated"
else
	rm -f "$aptdir/sources.list.new"
fi
apt_opts=(
	-o "Dir::Etc::SourceList=$aptdir/sources.list"
	-o "Dir::Etc::SourceParts=$aptdir/sources.d"
	-o "Dir::Etc::Parts=$aptdir/conf.d"
	-o "Dir::Etc::Preferences=$aptdir/prefs.d/none"
	-o "Dir::Etc::PreferencesParts=$aptdir/prefs.d"
	-o "Dir::State::Lists=$aptdir/lists"
	-o "Dir::State::status=/dev/null"
	-o "Dir::Cache=$aptdir"
	-o "APT::Architecture=amd64"
	-o "APT::Architectures=amd64"
	-o "APT::Sandbox::User=root"
	-o "Debug::NoLocking=1"
)

# Refresh the lists at most once a day: kernels move with point and security
# releases, but a boot loop should not hit the mirror every time.
if [[ ! -f $aptdir/updated ]] || [[ -n $(find "$aptdir/updated" -mmin +1440) ]]; then
	log "updating private apt lists"
	if apt-get "${apt_opts[@]}" -qq update >"$aptdir/update.log" 2>&1; then
		touch "$aptdir/updated"
	else
		log "apt-get update failed (see $aptdir/update.log); using cached lists if any"
	fi
fi

# --- pick and fetch the kernel -------------------------------------------------
# The newest linux-image-cloud-amd64 metapackage of the series says which
# versioned image package is current (e.g. linux-image-6.1.0-56-cloud-amd64).
kpkg="" kver=""
meta_ver=$(apt-cache "${apt_opts[@]}" madison linux-image-cloud-amd64 2>/dev/null |
	awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep "^${kernel//./\\.}\." | sort -V | tail -n 1 || true)
if [[ -n $meta_ver ]]; then
	kpkg=$(apt-cache "${apt_opts[@]}" show "linux-image-cloud-amd64=$meta_ver" |
		sed -n 's/^Depends:.*\(linux-image-[^ ,]*-cloud-amd64\) (= \([^)]*\)).*/\1/p' | head -n 1)
	kver=$meta_ver
fi
if [[ -n $kpkg ]]; then
	echo "$kpkg $kver" >"$cache/current-$kernel"
elif [[ -f $cache/current-$kernel ]]; then
	read -r kpkg kver <"$cache/current-$kernel"
	log "apt cannot resolve $kernel; reusing cached $kpkg $kver"
else
	die "cannot find a linux-image-cloud-amd64 for $kernel in the private apt lists"
fi
release=${kpkg#linux-image-}
kdir=$cache/kernels/$release
mkdir -p "$cache/debs" "$kdir"

deb=$cache/debs/${kpkg}_${kver}_amd64.deb
if [[ ! -s $deb ]]; then
	log "downloading $kpkg $kver"
	(cd "$cache/debs" && apt-get "${apt_opts[@]}" -qq download "$kpkg=$kver" >/dev/null)
	[[ -s $deb ]] || die "download of $kpkg=$kver did not produce $deb"
fi

# --- per-kernel pieces: vmlinuz and kernel.cpio (config + modules) ----------------
# Built once per kernel release and cache format.
if [[ ! -f $kdir/ready-$cache_format ]]; then
	log "preparing $release"
	rm -rf "$kdir"
	mkdir -p "$kdir"
	dpkg-deb -x "$deb" "$kdir/pkg"
	cp "$kdir/pkg/boot/vmlinuz-$release" "$kdir/vmlinuz"

	# bullseye/bookworm ship lib/modules, trixie usr/lib/modules (merged /usr).
	src=$kdir/pkg/lib/modules/$release
	[[ -d $src ]] || src=$kdir/pkg/usr/lib/modules/$release
	[[ -d $src ]] || die "no modules directory for $release in $deb"

	# 1. Full tree, decompressed: busybox-free kmod in the guest could read
	#    .ko.xz, but plain .ko keeps the guest independent of compression
	#    support and avoids decompressing under TCG. depmod on the host
	#    (kmod, works for any kernel version with -b) builds modules.dep.
	full=$kdir/full
	mkdir -p "$full/lib/modules"
	cp -a "$src" "$full/lib/modules/$release"
	find "$full" -name '*.ko.xz' -exec xz -d {} +
	find "$full" -name '*.ko.zst' -exec zstd -q -d --rm {} +
	find "$full" -name '*.ko.gz' -exec gzip -d {} +
	depmod -b "$full" "$release"

	# 2. Keep only networking modules (netfilter/nftables, sched/netem, veth,
	#    dummy, ifb, tun, congestion control...) and what they depend on: the
	#    full tree would triple the initramfs for nothing.
	mfull=$full/lib/modules/$release
	mapfile -t wanted < <(cd "$mfull" && find kernel/net -name '*.ko' && find kernel/drivers/net -maxdepth 1 -name '*.ko')
	closure=$(awk -v want="$(printf '%s\n' "${wanted[@]}")" '
		BEGIN { n = split(want, w, "\n"); for (i = 1; i <= n; i++) if (w[i] != "") keep[w[i]] = 1 }
		{ sub(":", "", $1); dep[$1] = $0 }
		END {
			# modules.dep lists the full (transitive) dependency set per module.
			for (m in keep) { print m; k = split(dep[m], d, " "); for (j = 2; j <= k; j++) print d[j] }
		}' "$mfull/modules.dep" | sort -u)
	root=$kdir/root
	mroot=$root/lib/modules/$release
	mkdir -p "$mroot" "$root/boot"
	(cd "$mfull" && echo "$closure" | cpio -pdm --quiet "$mroot")
	cp "$mfull"/modules.order "$mfull"/modules.builtin "$mfull"/modules.builtin.modinfo "$mroot"/ 2>/dev/null || true
	depmod -b "$root" "$release"
	rm -rf "$full"

	# tcptrace reads CONFIG_HZ from /proc/config.gz or /boot/config-$(uname -r);
	# Debian kernels have no /proc/config.gz.
	cp "$kdir/pkg/boot/config-$release" "$root/boot/"
	rm -rf "$kdir/pkg"

	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$kdir/kernel.cpio"
	rm -rf "$root"
	touch "$kdir/ready-$cache_format"
fi

# --- common userland piece: busybox, kmod, iproute2, nftables ------------------
# Built once per cache format; rebuilt if a host binary changed (apt upgrade).
common=$cache/common-$cache_format.cpio
bins=(/bin/busybox /bin/dash /usr/bin/kmod /usr/sbin/ip /usr/sbin/tc /usr/bin/ss /usr/sbin/nft)
stamp=$(for b in "${bins[@]}"; do stat -L -c '%n %s %Y' "$b"; done | md5sum | cut -d' ' -f1)
if [[ ! -f $common || $(cat "$common.stamp" 2>/dev/null) != "$stamp" ]]; then
	log "building common initramfs piece"
	c=$cache/common-root
	rm -rf "$c"
	mkdir -p "$c"/{bin,sbin,lib64,etc,proc,sys,dev,tmp,run,root,var,usr/lib}
	ln -s ../run "$c/var/run"
	ln -s ../bin "$c/usr/bin"
	ln -s ../sbin "$c/usr/sbin"
	cp /bin/busybox "$c/bin/busybox"
	# Every busybox applet as a symlink, except those the real tools provide.
	for a in $(/bin/busybox --list); do
		case $a in
		busybox | sh | ip | tc | modprobe | insmod | rmmod | lsmod | modinfo | depmod) ;;
		*) ln -s busybox "$c/bin/$a" ;;
		esac
	done
	# Dynamically linked host tools: copy each binary, every library ldd
	# lists (at the same path) and the loader.
	for b in "${bins[@]:1}"; do
		cp -L "$b" "$c/bin/$(basename "$b")"
		ldd "$b" | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
			mkdir -p "$c$(dirname "$lib")"
			cp -L "$lib" "$c$lib"
		done
	done
	# /bin/sh is dash, not busybox ash: Debian's static busybox runs its own
	# applets before searching PATH ("prefer applets"), so `ip netns` in a
	# shell script (ours or a test's `sh -c`) would get busybox's limited ip.
	ln -s dash "$c/bin/sh"
	# kmod is modprobe etc. by argv[0]; /sbin/modprobe is what the kernel runs
	# to autoload modules (veth, nft_*...) on demand.
	for a in modprobe insmod rmmod lsmod modinfo depmod; do ln -s ../bin/kmod "$c/sbin/$a"; done
	# tc's netem distribution tables (delay ... distribution normal).
	if [[ -d /usr/lib/x86_64-linux-gnu/tc ]]; then
		mkdir -p "$c/usr/lib/x86_64-linux-gnu"
		cp -a /usr/lib/x86_64-linux-gnu/tc "$c/usr/lib/x86_64-linux-gnu/"
	fi
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$c/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$c/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$c/etc/hosts"
	printf 'hosts: files\n' >"$c/etc/nsswitch.conf"
	cp /etc/protocols /etc/services "$c/etc/" 2>/dev/null || true
	(cd "$c" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$common"
	echo "$stamp" >"$common.stamp"
	rm -rf "$c"
fi

flock -u 9

# --- per-run piece: /init, config, test binaries ---------------------------------
# Rebuilt every run: the binaries change with every edit of the repository.
work=$cache/run-$kernel
rm -rf "$work"
mkdir -p "$work/root"
if [[ -n ${TCPTRACE_VM_TCPTRACE:-} ]]; then
	cp "$TCPTRACE_VM_TCPTRACE" "$work/root/tcptrace"
else
	log "building tcptrace"
	(cd "$repo" && CGO_ENABLED=0 go build -o "$work/root/tcptrace" ./cmd/tcptrace)
fi
if ((${#paths[@]} > 0)); then
	if [[ -n ${TCPTRACE_VM_E2E:-} ]]; then
		cp "$TCPTRACE_VM_E2E" "$work/root/e2e.test"
	else
		log "building e2e.test"
		(cd "$repo" && CGO_ENABLED=0 go test -c -o "$work/root/e2e.test" ./e2e)
	fi
fi
cp "$here/guest-init.sh" "$work/root/init"
chmod 755 "$work/root/init"
test_args=""
[[ -n ${TCPTRACE_VM_TEST_RUN:-} ]] && test_args="-test.run=${TCPTRACE_VM_TEST_RUN}"
[[ -n ${TCPTRACE_VM_BENCH:-} ]] && test_args="-test.run=^\$ -test.bench=${TCPTRACE_VM_BENCH} -test.benchtime=1x"
default_modules="veth dummy ifb nf_tables nft_ct nft_reject_inet nf_conntrack sch_netem sch_ingress sch_fq cls_bpf act_bpf tcp_bbr"
cat >"$work/root/vmtest.conf" <<EOF
VM_PATHS='${paths[*]}'
VM_TEST_TIMEOUT='${TCPTRACE_VM_TEST_TIMEOUT:-20m}'
VM_TEST_ARGS='$test_args'
VM_MODULES='${TCPTRACE_VM_MODULES:-$default_modules}'
VM_RUN_UNSUPPORTED='${TCPTRACE_VM_RUN_UNSUPPORTED:-0}'
VM_MEMLOCK='${TCPTRACE_VM_MEMLOCK:-}'
EOF
(cd "$work/root" && find . -mindepth 1 | cpio -o -H newc -R 0:0 --quiet) >"$work/run.cpio"

# The kernel unpacks concatenated newc archives in order, so the cached
# pieces are reused as they are.
cat "$cache/common-$cache_format.cpio" "$kdir/kernel.cpio" "$work/run.cpio" >"$work/initrd.cpio"

# --- boot ------------------------------------------------------------------------
timeout_s=${TCPTRACE_VM_TIMEOUT:-$((300 + 1260 * ${#paths[@]}))}
console=$work/console.log
log "booting $release (paths: ${paths[*]:-smoke only}, timeout ${timeout_s}s, console log $console)"
start=$EPOCHREALTIME
set +e
# -no-reboot + panic=-1: a guest panic ends QEMU instead of looping.
# -nic none: no network device (and no NIC option ROM to look for).
# stdin from /dev/null: nothing types into the serial console or the monitor.
# sed: drop CRs and SeaBIOS's terminal escapes, which would otherwise prefix
# the first line the guest prints.
# thread=single: one host thread runs both vCPUs in turn. With a host thread
# per vCPU (multi), a vCPU can run code another one is live-patching (a
# tracepoint's static branch, text_poke_bp's int3): "Oops: int3" in
# call_timer_fn, once in three runs on 6.12. Single was also faster on the
# 2-core development machine (a 6.12 smoke step and two tests in 28 s of guest
# time; 36 s for the smoke step alone with multi).
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-accel "tcg,thread=${TCPTRACE_VM_TCG_THREAD:-single}" -cpu max -m "${TCPTRACE_VM_MEM:-1024}" -smp 2 \
	-nographic -no-reboot -nic none \
	-kernel "$kdir/vmlinuz" -initrd "$work/initrd.cpio" \
	-append "console=ttyS0 quiet panic=-1 print-fatal-signals=1" </dev/null 2>&1 |
	sed -u 's/\r$//; s/\x1bc//g; s/\x1b\[[0-9;?]*[A-Za-z]//g' | tee "$console" |
	if [[ ${TCPTRACE_VM_VERBOSE:-0} == 1 ]]; then cat; else grep --line-buffered '^VMTEST '; fi
qemu_rc=${PIPESTATUS[0]}
set -e
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

# --- report ----------------------------------------------------------------------
echo
echo "== smoke output ($release)"
awk '/^VMTEST-SMOKE-BEGIN/ { on = 1 } on { print } /^VMTEST-SMOKE-END/ { on = 0 }' "$console"

echo
echo "== results ($release)"
grep -E '^VMTEST .* (smoke|path)=[a-z]+ result=' "$console" | grep -v ' test=' || true

failed=0
if ! grep -q "^VMTEST kernel=.* done" "$console"; then
	log "guest did not finish (QEMU exit $qemu_rc; 124 = host timeout)"
	failed=1
fi
if grep -qE '^VMTEST .* result=FAIL' "$console"; then
	failed=1
fi
for p in "${paths[@]}"; do
	grep -qE "^VMTEST .* path=$p result=" "$console" || {
		log "no result for path $p"
		failed=1
	}
done
echo "VMTEST-HOST kernel=$kernel release=$release wall=${elapsed}s qemu_rc=$qemu_rc status=$([[ $failed == 0 ]] && echo PASS || echo FAIL)"
if ((failed)); then
	# Each failed test's own output (from its === RUN to its --- FAIL, at
	# most 40 lines), so that a failure deep in a long run can be read
	# without the console: the matrix repeats this block after its tables.
	echo
	echo "== failed tests ($release)"
	awk '
		/^VMTEST .* path=[a-z]+ test=/ { next }
		/^=== RUN   Test[^\/]*$/ { name = $3; n = 0; buf = ""; next }
		name != "" && $0 ~ ("^--- FAIL: " name " ") {
			printf "%s%s\n", buf, $0; name = ""; next
		}
		name != "" && $0 ~ ("^--- (PASS|SKIP): " name " ") { name = ""; next }
		name != "" && n < 40 { buf = buf $0 "\n"; n++ }
	' "$console" | sed 's/^/FAILED-TEST /'
	echo
	echo "== tail of $console"
	tail -n 80 "$console"
	exit 1
fi
