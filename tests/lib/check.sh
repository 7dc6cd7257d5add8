# Helpers for the shell tests (sourced, not run: tests/*.sh are the tests).
# Each test sets $tmp to a scratch directory first.

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# expect_error CODE FRAGMENT CMD...: CMD exits CODE, and its stderr holds
# exactly one error line (log lines at INFO or WARN aside: a daemon's banner
# may come first), which contains FRAGMENT.
expect_error() {
  local code=$1 fragment=$2
  shift 2
  set +e
  "$@" > "$tmp/expect.out" 2> "$tmp/expect.err"
  local rc=$?
  set -e
  [ "$rc" -eq "$code" ] || fail "$* exited $rc, want $code; stderr: $(cat "$tmp/expect.err")"
  grep -qF -- "$fragment" "$tmp/expect.err" ||
    fail "$*: stderr lacks '$fragment': $(cat "$tmp/expect.err")"
  local lines
  lines=$(grep -v -E '^[0-9-]+ [0-9:.]+ [a-z]+[0-9]*\[[0-9]+\] (INFO|WARN) ' "$tmp/expect.err" |
    grep -c . || true)
  [ "$lines" -eq 1 ] || fail "$*: $lines error lines, want one: $(cat "$tmp/expect.err")"
  grep -F -- "$fragment" "$tmp/expect.err" | grep -qv -E ' (INFO|WARN) ' ||
    fail "$*: '$fragment' is not in the error line: $(cat "$tmp/expect.err")"
}

# need_python3 MODULE...: Debian's python3 (not a pyenv or venv one first on
# PATH), with the Debian packages' modules the test imports; sets $py.
need_python3() {
  py=/usr/bin/python3
  local m
  for m in "$@"; do
    "$py" -c "import $m" 2> /dev/null ||
      fail "/usr/bin/python3 cannot import $m: run scripts/setup.sh"
  done
}
