# Free loopback ports for a local cluster (sourced by scripts/train_local_dist.sh).
#
# free_port sets $port to a port nothing listens on (bash's /dev/tcp fails to
# connect to it) and that no earlier call of this shell handed out. It sets a
# variable instead of printing, because a function run inside $(...) runs in
# a subshell: the ports it remembered there are forgotten, and 32 workers got
# duplicate ports. Ports come from below the kernel's range for ephemeral
# ports: a port from that range could be handed to another socket before its
# daemon binds it. At most 1000 tries, so start-up stays bounded.

used_ports=" "
ephemeral_low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2> /dev/null || echo 32768)
[ "$ephemeral_low" -gt 12000 ] 2> /dev/null || ephemeral_low=32768

free_port() {
  local p tries
  for ((tries = 0; tries < 1000; tries++)); do
    p=$((10000 + (RANDOM * 32768 + RANDOM) % (ephemeral_low - 10000)))
    case "$used_ports" in *" $p "*) continue ;; esac
    used_ports+="$p "
    if ! (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null; then
      port=$p
      return 0
    fi
  done
  echo "free_port: no free loopback port in 10000-$ephemeral_low after 1000 tries" >&2
  return 1
}
