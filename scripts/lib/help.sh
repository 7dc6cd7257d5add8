# --help for every script: sourced first thing with the script's arguments,
#   . "$(dirname "$0")/lib/help.sh" "$@"
# When they ask for help (--help anywhere, or -h first), it prints the
# script's leading comment block (its usage) and exits 0 before the script
# does anything else (scripts/stop.sh --help stops nothing).
help_wanted() {
  local a
  [ "${1:-}" = -h ] && return 0
  for a in "$@"; do [ "$a" = --help ] && return 0; done
  return 1
}
if help_wanted "$@"; then
  echo "usage: scripts/$(basename "$0") (see below)"
  sed -n '2,/^[^#]/p' "$0" | sed '/^[^#]/d; s/^# \{0,1\}//'
  exit 0
fi
unset -f help_wanted
