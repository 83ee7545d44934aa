#!/usr/bin/env bash
# Compares two builds of the BPF object program by program, for a change of
# the sources that must not change what runs (a file split, a comment):
# the disassembly of each program (llvm-objdump, relocations by symbol),
# whatever its place in its section or the order of sections. Prints each
# program's instruction count, then the programs that differ; exit 1 if any.
#   .ci/bpf-objdiff.sh old.o tracer/tcptrace_x86_bpfel.o
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 old.o new.o" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One file per program: its section, then its instructions with the
# addresses and the label numbers (which depend on the program's place in
# the object) taken out.
split() {
	mkdir -p "$2"
	llvm-objdump -d -r --no-show-raw-insn "$1" | awk -v dir="$2" '
		/^Disassembly of section / { sec = $4; sub(/:$/, "", sec); next }
		/^[0-9a-f]+ <LBB[0-9]+_[0-9]+>:$/ {
			if (out) { l = $2; gsub(/LBB[0-9]+_/, "LBB_", l); print l > out }
			next
		}
		/^[0-9a-f]+ <[^>]+>:$/ {
			if (out) close(out)
			name = $2; gsub(/[<>:]/, "", name)
			out = dir "/" name
			print "section " sec > out
			next
		}
		!out { next }
		/R_BPF_/ { print "  reloc " $2 " " $3 > out; next }
		/^ *[0-9]+:\t/ {
			sub(/^ *[0-9]+:\t/, "")
			gsub(/LBB[0-9]+_/, "LBB_")
			print > out
		}'
}
split "$1" "$tmp/old"
split "$2" "$tmp/new"

status=0
for f in "$tmp"/old/* "$tmp"/new/*; do basename "$f"; done | sort -u | while read -r p; do
	o="$tmp/old/$p" n="$tmp/new/$p"
	if [ ! -f "$o" ] || [ ! -f "$n" ]; then
		echo "$p: only in $([ -f "$o" ] && echo "$1" || echo "$2")"
		continue
	fi
	printf '%-40s %5d %5d\n' "$p" "$(grep -vc -e '^section' -e '^  reloc' -e '^<LBB' "$o")" "$(grep -vc -e '^section' -e '^  reloc' -e '^<LBB' "$n")"
done > "$tmp/counts"
echo "program                                    old   new (instructions)"
cat "$tmp/counts"
if grep -q 'only in' "$tmp/counts"; then status=1; fi
if ! diff -r "$tmp/old" "$tmp/new" > "$tmp/diff"; then
	echo "== programs that differ"
	cat "$tmp/diff"
	status=1
else
	echo "== every program identical ($(ls "$tmp/new" | wc -l) programs)"
fi
exit $status
