# alive PID: PID runs and is not a zombie. A daemon killed with kill -9 stays
# a zombie until its parent (scripts/train_local_dist.sh, busy sleeping)
# reaps it, and kill -0 still succeeds on a zombie.
alive() {
  kill -0 "$1" 2> /dev/null || return 1
  local stat
  # No stat to read: it was reaped since kill -0, so it is gone.
  stat=$(cat "/proc/$1/stat" 2> /dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}
