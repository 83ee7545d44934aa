# make test's filter of `go test -v`: a line per top-level test as it ends
# (--- PASS), the whole output of a test that fails or is skipped, and
# everything outside tests (package results, build errors, panics) as it
# comes. The output of a passing test is dropped: its logs run to pages.
function flush() { printf "%s", buf; buf = ""; intest = 0 }
/^=== RUN   / && $3 !~ /\// { flush(); intest = 1; buf = $0 "\n"; next }
/^--- PASS: / { buf = ""; intest = 0; print; fflush(); next }
/^ +--- PASS: / && !intest { next }
/^--- (FAIL|SKIP): / { flush(); print; fflush(); next }
intest && !/^(ok  |FAIL|PASS$|panic: )/ { buf = buf $0 "\n"; next }
{ flush(); print; fflush() }
END { flush() }
