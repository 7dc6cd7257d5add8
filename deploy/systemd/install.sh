#!/usr/bin/env bash
# Installs pstrain's daemons as systemd services on this machine: the
# programs into PREFIX/bin, the unit templates pstrain-master@.service,
# pstrain-ps@.service and pstrain-worker@.service (the instance is the task
# index) into UNITS, and the folder ETC that they read:
#   ETC/pstrain.json         the configuration every role shares (--config; {} when new)
#   ETC/ROLE-I.json          task I's TF_CONFIG (--tf-config), e.g. ps-1.json
#   ETC/pstrain.env, ETC/ROLE-I.env   optional: PSTRAIN_ARGS="--set k=v ...",
#                            CUDA_VISIBLE_DEVICES=N for a worker's GPU
# With --hosts HOSTS_FILE (scripts/train_cloud.sh's format) it writes the
# TF_CONFIG files of the roles that HOSTS_FILE puts on --host HOST.
#   deploy/systemd/install.sh [--build DIR] [--prefix /usr/local] [--etc /etc/pstrain]
#       [--units /etc/systemd/system] [--user pstrain] [--hosts HOSTS_FILE --host HOST]
#       [--no-user] [--no-reload]
# --no-user: do not create the system user; --no-reload: do not run
# systemctl daemon-reload. Then: systemctl start pstrain-ps@1 (enable it to
# start at boot), journalctl -u pstrain-ps@1, systemctl restart pstrain-ps@1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build prefix=/usr/local etc=/etc/pstrain units=/etc/systemd/system user=pstrain
hosts_file="" host="" make_user=1 reload=1

die() {
  echo "install: $*" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --build | --prefix | --etc | --units | --user | --hosts | --host)
      [ $# -ge 2 ] || die "$1 wants a value"
      case "$1" in
        --build) build=$2 ;; --prefix) prefix=$2 ;; --etc) etc=$2 ;; --units) units=$2 ;;
        --user) user=$2 ;; --hosts) hosts_file=$2 ;; --host) host=$2 ;;
      esac
      shift 2
      ;;
    --no-user) make_user=0; shift ;;
    --no-reload) reload=0; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument \"$1\" (see --help)" ;;
  esac
done
[ -z "$hosts_file" ] || [ -n "$host" ] || die "--hosts wants --host HOST: which of its hosts this is"
[[ "$user" =~ ^[a-z_][a-z0-9_-]*$ ]] || die "--user \"$user\" is not a user name"
for b in pstrain-master pstrain-ps pstrain-worker pstrain; do
  [ -x "$build/$b" ] || die "$build/$b is missing: build first (scripts/build.sh)"
done

if [ $make_user -eq 1 ] && ! getent passwd "$user" > /dev/null; then
  useradd --system --user-group --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin "$user"
  echo "install: made the system user $user"
fi

install -d "$prefix/bin" "$units"
install -m 0755 "$build/pstrain-master" "$build/pstrain-ps" "$build/pstrain-worker" \
  "$build/pstrain" "$prefix/bin/"
for role in master ps worker; do
  sed -e "s|@BINDIR@|$prefix/bin|g" -e "s|@ETCDIR@|$etc|g" -e "s|@USER@|$user|g" \
    "$here/pstrain-$role@.service" > "$units/pstrain-$role@.service"
  chmod 0644 "$units/pstrain-$role@.service"
done

# The folder may hold TLS keys: readable by root and the service's group only.
install -d -m 0750 "$etc"
[ $make_user -eq 0 ] || chgrp "$user" "$etc"
[ -f "$etc/pstrain.json" ] || echo '{}' > "$etc/pstrain.json"
if [ -n "$hosts_file" ]; then
  "$root/scripts/train_cloud.sh" tf-config "$hosts_file" "$etc" "$host"
fi
chmod 0640 "$etc"/*
[ $make_user -eq 0 ] || chgrp "$user" "$etc"/*

if [ $reload -eq 1 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
echo "install: programs in $prefix/bin, units in $units, configuration in $etc"
shopt -s nullglob
for f in "$etc"/master-*.json "$etc"/ps-*.json "$etc"/worker-*.json; do
  name=$(basename "$f" .json)
  echo "  start: systemctl start pstrain-${name%-*}@${name##*-}"
done
