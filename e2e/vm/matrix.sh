#!/usr/bin/env bash
# matrix.sh [KERNELS...]: run run.sh for each kernel (default: 5.10 6.1 6.12)
# and print a Markdown table, kernel by probe path.
#
# A path cell holds the e2e result for that path (PASS, FAIL, or "not
# supported" when the forced path attaches nothing on that kernel); when the
# e2e suite did not run for it, "smoke PASS/FAIL/not supported" from
# `tcptrace --list-probes --force-path`. "auto" is the automatic choice.
#
# Environment: TCPTRACE_VM_PATHS="fentry kprobe" passes these paths to run.sh
# (default: run.sh's default; "smoke" for the smoke step only); every
# TCPTRACE_VM_* knob of run.sh applies.
#
# Kernels run side by side, TCPTRACE_VM_LANES at a time (default: the host's
# cores): a guest is one host thread (single-threaded TCG, run.sh), so a
# 2-core host runs two and the matrix takes about as long as its longest
# lane instead of the sum of its kernels. The newest kernel runs the most
# tests (fewer skip for lack of a hook), so the list is started from its
# end. A failing kernel does not stop the others; the exit status is 1 if
# any kernel failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${TCPTRACE_VM_CACHE:-/var/cache/tcptrace-vmtest}
kernels=("$@")
((${#kernels[@]} > 0)) || kernels=(5.10 6.1 6.12)
# Word splitting is intended: the variable is a space-separated list.
# shellcheck disable=SC2206
paths=(${TCPTRACE_VM_PATHS:-})
lanes=${TCPTRACE_VM_LANES:-$(nproc)}
[[ $lanes =~ ^[1-9][0-9]*$ ]] || {
	echo "matrix.sh: TCPTRACE_VM_LANES must be a positive number, not '$lanes'" >&2
	exit 2
}

mkdir -p "$cache"
declare -A out=()
for k in "${kernels[@]}"; do out[$k]=$cache/matrix-$k.out; done

# run_kernel K: run.sh for one kernel, its output to matrix-K.out and,
# prefixed with the kernel, to the terminal; its status to matrix-K.status.
run_kernel() {
	local k=$1 st=0 console=$cache/run-$1/console.log
	"$here/run.sh" "$k" "${paths[@]}" 2>&1 | tee "${out[$k]}" | sed -u "s/^/[$k] /" || st=1
	# QEMU's multi-threaded TCG can lose the race of the kernel's live code
	# patching (text_poke_bp's int3) when a tracepoint as busy as
	# timer:timer_expire_entry is switched on or off: seen once in three
	# runs on 6.12, "Oops: int3" in call_timer_fn, never on the host.
	# run.sh runs single-threaded TCG by default since; should a guest
	# still panic like that (or one run with TCPTRACE_VM_TCG_THREAD=multi),
	# it gets one more run on single-threaded TCG, the first console log
	# kept beside it.
	if ((st)) && grep -q "Oops: int3" "$console" 2>/dev/null; then
		cp "$console" "$console.panic"
		echo "[$k] matrix.sh: guest panicked in code patching (int3, $console.panic); running it once more with single-threaded TCG"
		st=0
		TCPTRACE_VM_TCG_THREAD=single "$here/run.sh" "$k" "${paths[@]}" 2>&1 | tee "${out[$k]}" | sed -u "s/^/[$k] /" || st=1
	fi
	echo "$st" >"$cache/matrix-$k.status"
}

# TCPTRACE_VM_TABLE_ONLY=1: the tables of the last runs, nothing run.
if [[ ${TCPTRACE_VM_TABLE_ONLY:-} != 1 ]]; then
	# Once for every kernel, before the lanes start: the packages (two
	# apt-get at once would fight over dpkg's lock) and the static
	# binaries (two builds at once would slow the first guest down).
	"$here/deps.sh"
	if [[ -z ${TCPTRACE_VM_TCPTRACE:-} ]]; then
		echo "matrix.sh: building tcptrace" >&2
		(cd "$repo" && CGO_ENABLED=0 go build -o "$cache/matrix-tcptrace" ./cmd/tcptrace)
		export TCPTRACE_VM_TCPTRACE=$cache/matrix-tcptrace
	fi
	if [[ -z ${TCPTRACE_VM_E2E:-} ]] && compgen -G "$repo/e2e/*_test.go" >/dev/null; then
		echo "matrix.sh: building e2e.test" >&2
		(cd "$repo" && CGO_ENABLED=0 go test -c -o "$cache/matrix-e2e.test" ./e2e)
		export TCPTRACE_VM_E2E=$cache/matrix-e2e.test
	fi
	running=0
	for ((i = ${#kernels[@]} - 1; i >= 0; i--)); do
		k=${kernels[i]}
		if ((running >= lanes)); then
			wait -n || true
			running=$((running - 1))
		fi
		rm -f "$cache/matrix-$k.status"
		echo "### $k" >&2
		run_kernel "$k" &
		running=$((running + 1))
	done
	wait
fi
status=0
for k in "${kernels[@]}"; do
	[[ ${TCPTRACE_VM_TABLE_ONLY:-} == 1 ]] && break
	[[ $(cat "$cache/matrix-$k.status" 2>/dev/null) == 0 ]] || status=1
done

# cell FILE PATH: the table cell for one kernel and path.
cell() {
	local f=$1 p=$2 r crash
	r=$(sed -n "s/^VMTEST .* path=$p result=\([A-Z]*\).*/\1/p" "$f" | tail -n 1)
	if [[ -n $r ]]; then
		[[ $r == SKIP ]] && r="not supported"
		# The test binary died of a signal and the tests it had not
		# finished ran again (guest-init.sh): say where.
		crash=$(sed -n "s/^VMTEST .* path=$p crash=\([^ ]*\) test=\([^ ]*\).*/\1 in \2/p" "$f" | head -n 1)
		[[ -n $crash ]] && r="$r (after a crash, $crash; rerun)"
		echo "$r"
		return
	fi
	r=$(sed -n "s/^VMTEST .* smoke=$p result=\([A-Z]*\).*/\1/p" "$f" | tail -n 1)
	case $r in
	"") echo "-" ;;
	UNSUPPORTED) echo "smoke not supported" ;;
	*) echo "smoke $r" ;;
	esac
}

echo
echo "| kernel | release | auto | tracepoint | fentry | kprobe | boot to /init | smoke done | wall time | status |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for k in "${kernels[@]}"; do
	f=${out[$k]}
	release=$(sed -n 's/^VMTEST-HOST .* release=\([^ ]*\).*/\1/p' "$f" | tail -n 1)
	wall=$(sed -n 's/^VMTEST-HOST .* wall=\([^ ]*\).*/\1/p' "$f" | tail -n 1)
	st=$(sed -n 's/^VMTEST-HOST .* status=\([A-Z]*\).*/\1/p' "$f" | tail -n 1)
	boot=$(sed -n 's/^VMTEST .* step=init uptime=\([0-9.]*\).*/\1 s/p' "$f" | head -n 1)
	smoke=$(sed -n 's/^VMTEST .* step=smoke-done uptime=\([0-9.]*\).*/\1 s/p' "$f" | head -n 1)
	# No VMTEST-HOST line: run.sh stopped before or at the boot (build error,
	# download failure...); its output is in the file.
	[[ -n $st ]] || st="FAIL (did not boot: see $f)"
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
		"$k" "${release:--}" "$(cell "$f" auto)" "$(cell "$f" tracepoint)" \
		"$(cell "$f" fentry)" "$(cell "$f" kprobe)" "${boot:--}" "${smoke:--}" "${wall:--}" "$st"
done
echo
echo "(boot to /init and smoke done: guest uptime; wall time: host, QEMU start to exit, e2e included)"

# event_cell FILE EVENT: the path tcptrace picks by itself, then each forced
# path: the e2e result of that path where the event attaches on it, "n/a"
# where the kernel lacks what the path needs, "none" where it failed.
event_cell() {
	local f=$1 ev=$2 auto p via r out
	auto=$(sed -n "s/^VMTEST .* smoke=auto event=$ev via=\([^ ]*\).*/\1/p" "$f" | tail -n 1)
	out="**${auto:--}**"
	for p in tracepoint fentry kprobe; do
		via=$(sed -n "s/^VMTEST .* smoke=$p event=$ev via=\([^ ]*\).*/\1/p" "$f" | tail -n 1)
		case $via in
		"") continue ;;
		n/a) out="$out; $p n/a" ;;
		none) out="$out; $p FAIL (did not attach)" ;;
		*)
			r=$(sed -n "s/^VMTEST .* path=$p result=\([A-Z]*\).*/\1/p" "$f" | tail -n 1)
			out="$out; $p ${r:-not run}"
			;;
		esac
	done
	echo "$out"
}

echo
echo "Per event: **the path tcptrace picks by itself**; then each forced path and the e2e result on it."
echo
printf '| event |'
for k in "${kernels[@]}"; do printf ' %s |' "$k"; done
printf '\n|---|'
for k in "${kernels[@]}"; do printf -- '---|'; done
printf '\n'
events=$(sed -n 's/^VMTEST .* smoke=auto event=\([^ ]*\) .*/\1/p' "${out[@]}" | awk '!seen[$0]++')
for ev in $events; do
	printf '| %s |' "$ev"
	for k in "${kernels[@]}"; do printf ' %s |' "$(event_cell "${out[$k]}" "$ev")"; done
	printf '\n'
done

# The output of each test that failed, last: a log cut to its tail still
# says which test failed on which kernel and path, and why.
for k in "${kernels[@]}"; do
	grep -q '^FAILED-TEST ' "${out[$k]}" || continue
	echo
	echo "Failed on $k:"
	grep -E '^VMTEST .* test=[^ /]+ result=FAIL' "${out[$k]}" | sed 's/^VMTEST kernel=[^ ]* /  /'
	sed -n 's/^FAILED-TEST /  /p' "${out[$k]}"
done
exit "$status"
