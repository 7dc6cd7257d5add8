#!/usr/bin/env bash
# The deployment files, checked without a cluster: every YAML file parses;
# the TF_CONFIG that Kubeflow's TFJob writes into each replica of
# deploy/k8s/tfjob.yaml (computed here from the manifest, in the operator's
# format) and the one the entrypoint makes for each StatefulSet pod are
# accepted by the daemons, through the image's entrypoint, with the
# manifests' own arguments and configuration; the entrypoint's exit-code
# handling; the systemd units (restart rule, pid file, systemd-analyze
# verify where it is installed) and their install script; the launcher's
# errors for bad hosts files.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
. "$(dirname "$0")/lib/check.sh"
need_python3 yaml
command -v jq > /dev/null || fail "jq is missing (the entrypoint needs it; scripts/setup.sh installs it)"
entrypoint=$root/deploy/docker/entrypoint.sh
export PSTRAIN_BIN_DIR=$build PSTRAIN_RUN_DIR=$tmp/run

# ---- Kubernetes: the manifests, and what their pods would run ----
"$py" - "$root" "$entrypoint" "$tmp" << 'PY'
import glob, json, os, subprocess, sys
import yaml

root, entrypoint, tmp = sys.argv[1:4]

def fail(msg):
    sys.exit("FAIL: " + msg)

docs = {}
for path in sorted(glob.glob(root + "/deploy/**/*.yaml", recursive=True)):
    try:
        loaded = [d for d in yaml.safe_load_all(open(path)) if d is not None]
    except yaml.YAMLError as e:
        fail("%s does not parse: %s" % (path, e))
    for d in loaded:
        for key in ("apiVersion", "kind", "metadata"):
            if key not in d:
                fail("%s: a document without %s" % (path, key))
        docs[(d["kind"], d["metadata"]["name"])] = d
    print("yaml ok: %s (%d documents)" % (os.path.relpath(path, root), len(loaded)))

config = docs[("ConfigMap", "pstrain-config")]["data"]["pstrain.json"]
os.makedirs(tmp + "/etc", exist_ok=True)
with open(tmp + "/etc/pstrain.json", "w") as f:
    f.write(config)
model_dir = json.loads(config)["checkpoint"]["model_dir"]
pvc = docs[("PersistentVolumeClaim", "pstrain-models")]
if "ReadWriteMany" not in pvc["spec"]["accessModes"]:
    fail("the model_dir volume must be ReadWriteMany: every role writes it")

def check_pod(what, pod, container, env, expect):
    """Runs the entrypoint as the pod would, with --check-config."""
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    claims = {v["name"] for v in pod.get("volumes", [])
              if v.get("persistentVolumeClaim", {}).get("claimName") == "pstrain-models"}
    if not any(model_dir.startswith(mounts[n] + "/") for n in claims if n in mounts):
        fail("%s: model_dir %s is not on the shared volume" % (what, model_dir))
    if mounts.get("config") != "/etc/pstrain":
        fail("%s: the configuration is not mounted at /etc/pstrain" % what)
    sc = pod.get("securityContext", {})
    if not sc.get("runAsNonRoot") or sc.get("runAsUser") != 10001:
        fail("%s: not run as the image's non-root user 10001" % what)
    full = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "PSTRAIN_ROLE")}
    full.update(env, PSTRAIN_ETC=tmp + "/etc")
    r = subprocess.run([entrypoint] + container.get("args", []) + ["--check-config"],
                       env=full, capture_output=True, text=True)
    if r.returncode != 0 or expect not in r.stdout:
        fail("%s: the daemon refused it (exit %d): %s%s; want '%s'"
             % (what, r.returncode, r.stdout, r.stderr, expect))
    return r.stdout.strip()

# TFJob: what the training operator writes into replica i of type rt: every
# replica type's addresses <job>-<rt>-<i>.<namespace>.svc:<port>, where the
# port is the "tensorflow" container's "tfjob-port" (2222 by default).
job = docs[("TFJob", "pstrain-fashion")]
if job["apiVersion"] != "kubeflow.org/v1":
    fail("the TFJob is not kubeflow.org/v1")
specs = job["spec"]["tfReplicaSpecs"]
if not ({"Master", "Chief"} & set(specs)) or not {"PS", "Worker"} <= set(specs):
    fail("the TFJob needs Master (or Chief), PS and Worker: has %s" % sorted(specs))
name, ns = job["metadata"]["name"], job["metadata"].get("namespace", "default")
ports, containers = {}, {}
for rt, spec in specs.items():
    if spec.get("restartPolicy") != "ExitCode":
        fail("%s: restartPolicy must be ExitCode (pstrain's exit-code rule)" % rt)
    c = [c for c in spec["template"]["spec"]["containers"] if c["name"] == "tensorflow"]
    if len(c) != 1:
        fail("%s: TFJob wires the container named tensorflow; there is none" % rt)
    p = [p for p in c[0].get("ports", []) if p.get("name") == "tfjob-port"]
    if [q["containerPort"] for q in p] != [2222]:
        fail("%s: want one port named tfjob-port, 2222; got %s" % (rt, c[0].get("ports")))
    ports[rt], containers[rt] = 2222, c[0]
gpus = containers["Worker"].get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
if gpus != 1:
    fail("a Worker must ask for one nvidia.com/gpu, not %s" % gpus)
cluster = {rt.lower(): ["%s-%s-%d.%s.svc:%d" % (name, rt.lower(), i, ns, ports[rt])
                        for i in range(specs[rt].get("replicas", 1))] for rt in specs}
n = 0
for rt, spec in specs.items():
    for i in range(spec.get("replicas", 1)):
        t = rt.lower()
        tf = {"cluster": cluster, "task": {"type": t, "index": i}, "environment": "cloud"}
        what = "TFJob %s %d" % (rt, i)
        out = check_pod(what, spec["template"]["spec"], containers[rt],
                        {"TF_CONFIG": json.dumps(tf)}, "valid: %s %d at %s" % (t, i, cluster[t][i]))
        n += 1
        if t == "worker":
            # With dynamic workers the operator writes the sparse form: a
            # worker sees itself only.
            sparse = dict(tf, cluster=dict(cluster, worker={str(i): cluster[t][i]}))
            check_pod(what + " (sparse)", spec["template"]["spec"], containers[rt],
                      {"TF_CONFIG": json.dumps(sparse)}, "valid: worker %d" % i)
print("tfjob ok: %d replicas accept the TF_CONFIG the operator writes, e.g. %s" % (n, out))

# StatefulSets: the entrypoint makes TF_CONFIG from the pod's name.
sets = {d["metadata"]["name"]: d for (k, _), d in docs.items() if k == "StatefulSet"}
replicas = {s["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]: s["spec"]["replicas"]
            for s in sets.values()}
n = 0
for sname, s in sorted(sets.items()):
    svc = docs.get(("Service", s["spec"]["serviceName"]))
    if not svc or svc["spec"].get("clusterIP") != "None" or not svc["spec"].get("publishNotReadyAddresses"):
        fail("%s: its Service must be headless and publish addresses before the pods are ready" % sname)
    labels = s["spec"]["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        fail("%s: its Service does not select its pods" % sname)
    pod = s["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    if int(env["PSTRAIN_PS_REPLICAS"]) != replicas["ps"] or \
            int(env["PSTRAIN_WORKER_REPLICAS"]) != replicas["worker"]:
        fail("%s: PSTRAIN_*_REPLICAS %s differ from the StatefulSets' replicas %s" % (sname, env, replicas))
    if env.get("PSTRAIN_IDLE_AFTER_EXIT") != "1":
        fail("%s: without PSTRAIN_IDLE_AFTER_EXIT a finished run starts again" % sname)
    if env["PSTRAIN_ROLE"] == "worker" and \
            c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu") != 1:
        fail("%s: a worker must ask for one nvidia.com/gpu" % sname)
    env["PSTRAIN_NAMESPACE"] = ns
    for i in range(s["spec"]["replicas"]):
        host = "%s-%d" % (sname, i)
        out = check_pod("StatefulSet pod " + host, pod, c, dict(env, HOSTNAME=host),
                        "valid: %s %d at %s.%s.%s.svc.cluster.local:2222"
                        % (env["PSTRAIN_ROLE"], i, host, s["spec"]["serviceName"], ns))
        n += 1
print("statefulsets ok: %d pods accept the TF_CONFIG made from their ordinal, e.g. %s" % (n, out))
PY

# ---- the entrypoint: errors, and the exit-code rule under a StatefulSet ----
unset TF_CONFIG PSTRAIN_ROLE
expect_error 2 "TF_CONFIG is not set" "$entrypoint"
TF_CONFIG='{"task": {"type": "boss", "index": 0}}' expect_error 2 '"boss"' "$entrypoint"
TF_CONFIG='{"cluster": ' expect_error 2 "not JSON" "$entrypoint"
PSTRAIN_ROLE=ps HOSTNAME=pstrain-ps PSTRAIN_PS_REPLICAS=1 PSTRAIN_WORKER_REPLICAS=1 \
  expect_error 2 "ordinal" "$entrypoint"
PSTRAIN_ROLE=ps HOSTNAME=pstrain-ps-2 PSTRAIN_PS_REPLICAS=2 PSTRAIN_WORKER_REPLICAS=1 \
  expect_error 2 "task.index 2 is out of range" "$entrypoint" --check-config
TF_CONFIG='{"cluster": {"master": ["no-such-host.invalid:2222"], "ps": ["10.1.1.1:2222"], "worker": ["10.1.1.2:2222"]}, "task": {"type": "master", "index": 0}}' \
  PSTRAIN_DNS_WAIT_SECS=0 expect_error 129 "did not resolve" "$entrypoint"
# Fake daemons: exit with $FAKE_STATUS, or wait to be stopped.
mkdir -p "$tmp/fake"
printf '#!/usr/bin/env bash\necho "$$ $*" > %s/fake/args\n[ -z "${FAKE_STATUS:-}" ] || exit "$FAKE_STATUS"\ntrap "exit 0" TERM\nwhile :; do sleep 0.1; done\n' "$tmp" > "$tmp/fake/pstrain-ps"
chmod +x "$tmp/fake/pstrain-ps"
tf='{"cluster": {"master": ["10.1.1.1:2222"], "ps": ["10.1.1.2:2222"], "worker": ["10.1.1.3:2222"]}, "task": {"type": "ps", "index": 0}}'
run_fake() { # STATUS: starts the entrypoint under a StatefulSet's settings
  TF_CONFIG=$tf PSTRAIN_BIN_DIR=$tmp/fake PSTRAIN_ETC=$tmp/none PSTRAIN_IDLE_AFTER_EXIT=1 FAKE_STATUS=$1 \
    "$entrypoint" --set model=mlp &
  fake_pid=$!
  for _ in $(seq 1 50); do [ -s "$tmp/fake/args" ] && break; sleep 0.1; done
}
rm -f "$tmp/fake/args"
run_fake 65
sleep 0.5
kill -0 "$fake_pid" 2> /dev/null || fail "after exit 65 the entrypoint exited instead of idling"
grep -q -- "--set model=mlp --pid-file $tmp/run/ps0.pid" "$tmp/fake/args" ||
  fail "the daemon's arguments: $(cat "$tmp/fake/args")"
kill -TERM "$fake_pid"
wait "$fake_pid" || fail "the idle entrypoint exited $? on SIGTERM"
rm -f "$tmp/fake/args"
run_fake 129
rc=0
wait "$fake_pid" || rc=$?
[ $rc -eq 129 ] || fail "after exit 129 the entrypoint exited $rc, want 129 (a restart)"
rm -f "$tmp/fake/args"
run_fake ""
kill -TERM "$fake_pid"
wait "$fake_pid" || fail "a stopped daemon's entrypoint exited $?, want 0"
echo "entrypoint ok"

# ---- systemd ----
units=$tmp/units
printf 'master 0 10.1.1.1 2222\nps 0 10.1.1.1 2223\nps 1 10.1.1.2 2222\nworker 0 10.1.1.3 2222 0\nworker 1 10.1.1.3 2223 1\n' > "$tmp/hosts"
"$root/deploy/systemd/install.sh" --build "$build" --prefix "$tmp/usr" --etc "$tmp/etc-pstrain" \
  --units "$units" --no-user --no-reload --hosts "$tmp/hosts" --host 10.1.1.3 > "$tmp/install.out" ||
  fail "install.sh: $(cat "$tmp/install.out")"
grep -q "systemctl start pstrain-worker@1" "$tmp/install.out" || fail "install.sh: $(cat "$tmp/install.out")"
[ "$(cat "$tmp/etc-pstrain/worker-1.env")" = "CUDA_VISIBLE_DEVICES=1" ] || fail "worker-1.env"
[ ! -e "$tmp/etc-pstrain/ps-1.json" ] || fail "install.sh wrote another host's TF_CONFIG"
for role in master ps worker; do
  unit=$units/pstrain-$role@.service
  grep -qx "Restart=on-failure" "$unit" || fail "$unit: no Restart=on-failure"
  # The statuses that stop a restart are exactly the permanent ones, 1-127.
  codes=$(sed -n 's/^RestartPreventExitStatus=//p' "$unit" | tr ' ' '\n' | sort -n | tr '\n' ' ')
  [ "$codes" = "$(seq 1 127 | tr '\n' ' ')" ] || fail "$unit: RestartPreventExitStatus= is $codes"
  pid=$(sed -n 's/^PIDFile=//p' "$unit")
  grep -q "^ExecStart=$tmp/usr/bin/pstrain-$role .*--pid-file $pid " "$unit" ||
    fail "$unit: ExecStart does not write PIDFile=$pid"
  grep -q "^ExecStart=.*--tf-config $tmp/etc-pstrain/$role-%i.json --config $tmp/etc-pstrain/pstrain.json" "$unit" ||
    fail "$unit: ExecStart does not read $tmp/etc-pstrain"
  cp "$unit" "$units/pstrain-$role@0.service"
done
# The daemons accept what the units give them.
"$tmp/usr/bin/pstrain-worker" --tf-config "$tmp/etc-pstrain/worker-1.json" \
  --config "$tmp/etc-pstrain/pstrain.json" --check-config | grep -q "valid: worker 1 at 10.1.1.3:2223" ||
  fail "pstrain-worker refuses worker-1.json"
if command -v systemd-analyze > /dev/null; then
  (cd "$units" && systemd-analyze verify pstrain-master@0.service pstrain-ps@0.service \
    pstrain-worker@0.service) > "$tmp/verify" 2>&1 || fail "systemd-analyze verify: $(cat "$tmp/verify")"
  [ ! -s "$tmp/verify" ] || fail "systemd-analyze verify: $(cat "$tmp/verify")"
  echo "systemd ok (systemd-analyze verify)"
else
  echo "SKIP systemd-analyze verify: systemd-analyze is not installed (Debian package systemd)"
fi

# ---- the image's build helpers ----
"$root/deploy/docker/runtime-packages.sh" "$build/pstrain-ps" > "$tmp/packages" ||
  fail "runtime-packages.sh failed"
grep -qx "libc6" "$tmp/packages" || fail "runtime-packages.sh: $(cat "$tmp/packages")"
while read -r p; do
  dpkg-query -W "$p" > /dev/null 2>&1 || fail "runtime-packages.sh names $p, which is not a package here"
done < "$tmp/packages"
for f in build.sh install-runtime.sh runtime-packages.sh entrypoint.sh; do
  [ -x "$root/deploy/docker/$f" ] || fail "deploy/docker/$f is not executable"
done

# ---- the launcher's checks of a hosts file (nothing is started) ----
cloud() { PSTRAIN_BUILD=$build PSTRAIN_SSH=false "$root/scripts/train_cloud.sh" "$@"; }
h=$tmp/h
printf 'master 0 h1 2222\nps 0 h1 2223\nworker 0 h2 2222\n' > "$h.ok"
bad() { # FRAGMENT LINE...: a hosts file with these lines is refused, naming FRAGMENT
  local fragment=$1
  shift
  printf '%s\n' "$@" > "$h"
  expect_error 2 "$fragment" cloud status "$h"
}
bad 'role "boss"' "boss 0 h1 1" "ps 0 h1 2" "worker 0 h1 3"
bad "want ROLE INDEX HOST PORT [GPU], got 3 fields" "master 0 h1"
bad "ps 0 is listed twice" "master 0 h1 1" "ps 0 h1 2" "ps 0 h2 2" "worker 0 h1 3"
bad "h1:2 is already ps0's address" "master 0 h1 1" "ps 0 h1 2" "worker 0 h1 2"
bad "only a worker takes a GPU" "master 0 h1 1" "ps 0 h1 2 0" "worker 0 h1 3"
bad 'port "70000"' "master 0 h1 70000" "ps 0 h1 2" "worker 0 h1 3"
bad "no ps 1" "master 0 h1 1" "ps 0 h1 2" "ps 2 h1 4" "worker 0 h1 3"
bad "want one master (or chief) line, got 2" "master 0 h1 1" "chief 0 h1 4" "ps 0 h1 2" "worker 0 h1 3"
bad "no worker line" "master 0 h1 1" "ps 0 h1 2"
expect_error 2 "absolute path on storage that every host mounts" cloud start "$h.ok"
expect_error 2 "lists no ps 3" cloud restart "$h.ok" ps 3
expect_error 2 "master0: pstrain-master: model: /no/such" cloud start "$h.ok" \
  --set checkpoint.model_dir=/x --set model=/no/such
cloud tf-config "$h.ok" "$tmp/tf" > /dev/null
[ "$(jq -c .cluster "$tmp/tf/ps-0.json")" = '{"master":["h1:2222"],"ps":["h1:2223"],"worker":["h2:2222"]}' ] ||
  fail "tf-config: $(cat "$tmp/tf/ps-0.json")"
echo ok
