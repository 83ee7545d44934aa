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
# Kernels run one after the other: the host has 2 cores and each TCG guest
# uses both. A failing kernel does not stop the others; the exit status is 1
# if any kernel failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${TCPTRACE_VM_CACHE:-/var/cache/tcptrace-vmtest}
kernels=("$@")
((${#kernels[@]} > 0)) || kernels=(5.10 6.1 6.12)
# Word splitting is intended: the variable is a space-separated list.
# shellcheck disable=SC2206
paths=(${TCPTRACE_VM_PATHS:-})

mkdir -p "$cache"
status=0
declare -A out=()
for k in "${kernels[@]}"; do
	out[$k]=$cache/matrix-$k.out
	echo "### $k" >&2
	# run.sh output goes to the terminal and to a file the table is built
	# from; pipefail makes the pipeline fail when run.sh does.
	if ! "$here/run.sh" "$k" "${paths[@]}" 2>&1 | tee "${out[$k]}"; then
		status=1
	fi
done

# cell FILE PATH: the table cell for one kernel and path.
cell() {
	local f=$1 p=$2 r
	r=$(sed -n "s/^VMTEST .* path=$p result=\([A-Z]*\).*/\1/p" "$f" | tail -n 1)
	if [[ -n $r ]]; then
		[[ $r == SKIP ]] && r="not supported"
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
exit "$status"
