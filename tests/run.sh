#!/usr/bin/env bash
# tests/run.sh BUILD_DIR - run every test of aidos and print one summary.
#
# Runs, from the repository root:
#   1. every executable BUILD_DIR/tests/test_* (cmocka programs), each under
#      `timeout` (300 s; 600 s when AIDOS_SAN=1, for sanitizer builds);
#   2. every script tests/*.sh other than this one, as `tests/NAME.sh BUILD_DIR`,
#      under the same timeout.
# and ends with exactly one line `N passed, N failed, N skipped`; exits 1 if
# anything failed, else 0.
#
# Counting. A cmocka program: its closing lines "[  PASSED  ] N test(s).",
# "[  FAILED  ] N test(s), listed below:" and "[  SKIPPED ] N test(s), ...".
# A program that crashes, times out, or exits non-zero without reporting a
# failure (a sanitizer report at exit, say) counts one failed more, named.
#
# Script test convention: a script prints whatever it likes and, as its last
# line of the kind, `N passed, N failed, N skipped` (", N skipped" optional),
# which is taken as its counts; exit status 77 alone means "skipped as a
# whole" (say why on stdout); without a summary line, exit 0 counts as 1
# passed and anything else as 1 failed. A script must not need a network.
#
# Each program's output goes to BUILD_DIR/test-logs/NAME.log. Printed here: a
# line per program, the indented notes tests print (lines starting with four
# spaces, e.g. the golden tests' errors per case), and for a failure the
# failing tests' messages (or the log's tail after a crash). AIDOS_TEST_VERBOSE=1
# prints every log whole. AIDOS_TEST_FILTER=REGEX runs only matching programs;
# AIDOS_TEST_TIMEOUT=SECONDS replaces the timeout.
set -uo pipefail

if [[ $# -ne 1 || ! -d $1 ]]; then
	echo "usage: tests/run.sh BUILD_DIR" >&2
	exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$(cd "$1" && pwd)
cd "$root" || exit 2

limit=${AIDOS_TEST_TIMEOUT:-300}
if [[ ${AIDOS_SAN:-0} == 1 ]]; then
	limit=${AIDOS_TEST_TIMEOUT:-600}
	: "${ASAN_OPTIONS:=detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}"
	: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
	export ASAN_OPTIONS UBSAN_OPTIONS
fi
logs=$build/test-logs
mkdir -p "$logs"

total_p=0 total_f=0 total_s=0
failed_names=()

# Prints what a reader needs from a failed program's log.
show_failure() {
	local log=$1 crashed=$2 names
	if ((crashed)); then
		tail -n 25 "$log" | sed 's/^/  | /'
		return
	fi
	grep -E '^(ERROR:|.*(AddressSanitizer|LeakSanitizer|runtime error|SUMMARY:))' "$log" |
		head -n 40 | sed 's/^/  | /'
	names=$(grep -E '^\[  FAILED  \] [^0-9]' "$log" | sed 's/^\[  FAILED  \] //' | sort -u | tr '\n' ' ')
	[[ -n $names ]] && echo "  | failed: $names"
}

# count NAME LOG RC SECONDS KIND
count() {
	local name=$1 log=$2 rc=$3 secs=$4 kind=$5 p=0 f=0 s=0 note="" crashed=0 line
	if [[ $kind == cmocka ]]; then
		line=$(grep -E '^\[  PASSED  \] [0-9]+ test' "$log" | tail -n 1)
		[[ $line =~ ([0-9]+) ]] && p=${BASH_REMATCH[1]}
		line=$(grep -E '^\[  FAILED  \] [0-9]+ test' "$log" | tail -n 1)
		[[ $line =~ ([0-9]+) ]] && f=${BASH_REMATCH[1]}
		line=$(grep -E '^\[  SKIPPED \] [0-9]+ test' "$log" | tail -n 1)
		[[ $line =~ ([0-9]+) ]] && s=${BASH_REMATCH[1]}
		if ! grep -qE '^\[==========\] [0-9]+ test\(s\) run' "$log"; then
			# no summary: it died mid-run; keep the tests it finished
			p=$(grep -cE '^\[       OK \]' "$log")
			f=$(grep -cE '^\[  FAILED  \] [^0-9]' "$log")
			s=$(grep -cE '^\[  SKIPPED \] [^0-9]' "$log")
			crashed=1
		fi
	else
		line=$(grep -E '^([A-Za-z_-]+: )?[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -n 1)
		if [[ -n $line ]]; then
			[[ $line =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]] && p=${BASH_REMATCH[1]} f=${BASH_REMATCH[2]}
			[[ $line =~ ([0-9]+)\ skipped ]] && s=${BASH_REMATCH[1]}
		elif ((rc == 77)); then
			s=1
		elif ((rc == 0)); then
			p=1
		fi
	fi
	if ((rc == 124 || rc == 137)); then
		note=" TIMED OUT after ${limit} s"
		f=$((f + 1)) crashed=1
	elif ((rc > 128)); then
		note=" CRASHED (signal $((rc - 128)))"
		f=$((f + 1)) crashed=1
	elif ((rc != 0 && rc != 77 && f == 0)); then
		note=" exited with status $rc"
		f=$((f + 1))
		grep -qE 'Sanitizer' "$log" && note+=" (sanitizer report)"
	elif ((crashed && rc == 0 && f == 0)); then
		note=" exited 0 without cmocka's summary"
		f=$((f + 1))
	fi
	printf '%-28s %d passed, %d failed, %d skipped  (%s s)%s\n' "$name" "$p" "$f" "$s" "$secs" "$note"
	if [[ ${AIDOS_TEST_VERBOSE:-0} == 1 ]]; then
		sed 's/^/  | /' "$log"
	else
		grep -E '^    ' "$log" | head -n 200
		[[ $kind == script ]] && ((f || rc == 77)) && crashed=1  # show its tail
		((f)) || [[ $kind == script && $rc == 77 ]] && show_failure "$log" "$crashed"
	fi
	((f)) && failed_names+=("$name")
	total_p=$((total_p + p)) total_f=$((total_f + f)) total_s=$((total_s + s))
}

run_one() {  # KIND NAME CMD...
	local kind=$1 name=$2 log=$logs/$2.log t0 us rc
	shift 2
	t0=${EPOCHREALTIME/./}
	# (in a subshell whose stderr is dropped: bash's own "Segmentation
	# fault" notice; the program's output is in the log)
	(timeout -k 10 "$limit" "$@" </dev/null >"$log" 2>&1; exit $?) 2>/dev/null
	rc=$?
	us=$((${EPOCHREALTIME/./} - t0))
	count "$name" "$log" "$rc" "$((us / 1000000)).$((us / 100000 % 10))" "$kind"
}

filter=${AIDOS_TEST_FILTER:-}
ran=0
for bin in "$build"/tests/test_*; do
	[[ -f $bin && -x $bin ]] || continue
	name=$(basename "$bin")
	[[ -n $filter && ! $name =~ $filter ]] && continue
	run_one cmocka "$name" "$bin"
	ran=$((ran + 1))
done
for script in "$root"/tests/*.sh; do
	[[ -f $script ]] || continue
	name=$(basename "$script")
	[[ $name == run.sh ]] && continue
	[[ -n $filter && ! $name =~ $filter ]] && continue
	run_one script "$name" bash "$script" "$build"
	ran=$((ran + 1))
done

if ((ran == 0)); then
	echo "no tests found in $build/tests or tests/*.sh"
	total_f=$((total_f + 1))
fi
((${#failed_names[@]})) && echo "failed: ${failed_names[*]} (logs in $logs)"
echo "$total_p passed, $total_f failed, $total_s skipped"
((total_f == 0))
