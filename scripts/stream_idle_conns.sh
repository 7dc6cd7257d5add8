#!/usr/bin/env bash
# Measures a PS holding many idle tensor stream connections (half over TCP,
# half through shared memory on its Unix socket, each after one Stats call).
#   scripts/stream_idle_conns.sh [N] [BUILD_DIR]
#     a lone build/pstrain-ps: its thread count before and while holding N
#     (N = 2000), that calls still work beside them, its exit status after
#     SIGTERM.
#   scripts/stream_idle_conns.sh --cluster [N] [BUILD_DIR]
#     the same N held on the PS of a training cluster (scripts/
#     train_local_dist.sh: 1 PS, 2 workers, the MLP for 3 epochs, the TCP
#     stream on) until the PS exits at the end of training: its most threads
#     while holding them, the run's accuracy, the PS's last log line.
. "$(dirname "$0")/lib/help.sh" "$@"
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cluster=0
if [ "${1:-}" = "--cluster" ]; then
  cluster=1
  shift
fi
n=${1:-2000}
build=${2:-$root/build}
ulimit -n 8192
tmp=$(mktemp -d)
ps=""
launcher=""
trap '[ -n "$ps" ] && kill "$ps" 2>/dev/null; [ -n "$launcher" ] && PSTRAIN_RUNLOGS=$tmp "$root/scripts/stop.sh" > /dev/null 2>&1; rm -rf "$tmp"' EXIT

hold() { # PID STREAM_PORT N MODE(lone|cluster)
  python3 - "$@" <<'PY'
import fcntl, os, socket, struct, sys, time
pid, sport, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
mode = sys.argv[4]
STATS = b"/pstrain.ParameterServer/Stats"
def threads():
    return len(os.listdir(f"/proc/{pid}/task"))
def call(s, shm=None):
    s.sendall(struct.pack("<IIQQ", 0x31525350, len(STATS), 10_000_000, 0) + STATS)
    h = b""
    while len(h) < 24:
        chunk = s.recv(24 - len(h))
        if not chunk:
            raise RuntimeError("closed")
        h += chunk
    magic, code, mlen, flags, blen = struct.unpack("<IIIIQ", h)
    rest = mlen + (0 if shm else blen)
    while rest > 0:
        rest -= len(s.recv(rest))
    return code
def tcp():
    s = socket.create_connection(("127.0.0.1", sport))
    return s, None
def unix(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + name)
    fd = os.memfd_create("idle", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, 2 << 20)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    socket.send_fds(s, [struct.pack("<IIQQ", 0x314d5350, 0, 1 << 20, 1 << 20)], [fd])
    os.close(fd)
    return s, True
for _ in range(100):  # until the stream listens
    try:
        probe, _ = tcp()
        break
    except OSError:
        time.sleep(0.1)
# The Unix socket's name, as a client asks for it (over the TCP stream).
port_m = b"/pstrain.Rpc/StreamPort"
probe.sendall(struct.pack("<IIQQ", 0x31525350, len(port_m), 0, 0) + port_m)
h = probe.recv(24)
mlen, blen = struct.unpack("<I", h[8:12])[0], struct.unpack("<Q", h[16:24])[0]
body = b""
while len(body) < mlen + blen:
    body += probe.recv(mlen + blen - len(body))
name = body[mlen:].decode().split(" ")[1]
assert call(probe) == 0
before = threads()
conns = []
t0 = time.time()
for i in range(n):
    s, shm = tcp() if i % 2 == 0 else unix(name)
    assert call(s, shm) == 0, "a held connection's first call failed"
    conns.append((s, shm))
opened = time.time() - t0
during = threads()
ok = sum(call(*conns[i]) == 0 for i in range(0, n, max(1, n // 50)))
fresh, _ = tcp()
t1 = time.time()
assert call(fresh) == 0
print(f"connections held: {n} ({n // 2} TCP, {n - n // 2} shared memory), opened and "
      f"handshaken in {opened:.2f} s")
print(f"PS threads: before {before}, holding {n}: {during}")
print(f"calls on held connections: {ok} of {len(range(0, n, max(1, n // 50)))} ok; "
      f"a new connection's call: ok in {1e3 * (time.time() - t1):.1f} ms")
if mode == "cluster":
    most = during
    while os.path.exists(f"/proc/{pid}/task"):
        try:
            most = max(most, threads())
        except OSError:
            break
        time.sleep(0.2)
    print(f"PS threads while training beside them: at most {most}")
PY
}

if [ $cluster -eq 0 ]; then
  echo '{"input": [16], "layers": [{"type": "dense", "units": 4, "activation": "softmax"}]}' \
    > "$tmp/model.json"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  sport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  TF_CONFIG="{\"cluster\": {\"master\": [\"127.0.0.1:1\"], \"ps\": [\"127.0.0.1:$port\"], \"worker\": [\"127.0.0.1:2\"]}, \"task\": {\"type\": \"ps\", \"index\": 0}}" \
    "$build/pstrain-ps" --set model="$tmp/model.json" --set log.level=warn --set rpc.stream=true \
    --set rpc.stream_port="$sport" --set rpc.stream_max_connections=$((n + 100)) &
  ps=$!
  hold "$ps" "$sport" "$n" lone
  kill -TERM "$ps"
  set +e
  wait "$ps"
  rc=$?
  set -e
  ps=""
  echo "PS exit status after SIGTERM: $rc"
  exit "$rc"
fi

PSTRAIN_BUILD=$build PSTRAIN_RUNLOGS=$tmp "$root/scripts/train_local_dist.sh" --ps 1 --workers 2 \
  --set model=mlp --set train.epochs=3 --set rpc.stream=true \
  --set rpc.stream_max_connections=$((n + 100)) --set checkpoint.model_dir="$tmp/run" \
  > "$tmp/launcher.out" 2>&1 &
launcher=$!
for _ in $(seq 300); do # until the PS logs its stream port
  sport=$(sed -n 's/.*over TCP on port \([0-9]*\).*/\1/p' "$tmp/ps0.log" 2> /dev/null | tail -1 || true)
  [ -n "$sport" ] && break
  sleep 0.1
done
[ -n "$sport" ] || { echo "stream_idle_conns: the PS never logged its stream port" >&2; exit 1; }
hold "$(cat "$tmp/ps0.pid")" "$sport" "$n" cluster
set +e
wait "$launcher"
rc=$?
set -e
launcher=""
grep -i "accuracy" "$tmp/launcher.out" | tail -2 || true
echo "PS's last line: $(tail -1 "$tmp/ps0.log")"
echo "launcher exit status: $rc"
exit "$rc"
