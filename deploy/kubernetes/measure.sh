#!/bin/bash
# The figures behind the DaemonSet's resources (README.md beside this file): the collector,
# with only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, on one end of a veth pair in a network
# namespace of its own, while the other end sends UDP at each rate to 63 808 flows (64
# source ports × 997 destination ports). Per run: the collector's CPU (user + system, from
# /proc/PID/stat), its peak resident memory (VmHWM) and the memory of its BPF maps (the
# `memlock` of each map in /proc/PID/fdinfo, charged to the pod's memory cgroup).
#
#   sudo deploy/kubernetes/measure.sh target/release/flowmetrix [FLAGS...]
#
# FLAGS default to the ConfigMap's capture settings with --output none.
set -euo pipefail
bin=$(realpath "$1"); shift
flags=("$@")
[ ${#flags[@]} -gt 0 ] || flags=(--direction both --mode both --sample-rate 100 --output none)
secs=${SECONDS_PER_RATE:-15}
a=fmx-measure-a-$$ b=fmx-measure-b-$$
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
ip netns add "$a"; ip netns add "$b"
ip -n "$a" link add fmxm0 type veth peer name fmxm1 netns "$b"
ip -n "$a" addr add 10.99.0.1/24 dev fmxm0; ip -n "$b" addr add 10.99.0.2/24 dev fmxm1
ip -n "$a" link set fmxm0 up; ip -n "$b" link set fmxm1 up
send() { # rate, seconds
  ip netns exec "$b" python3 - "$1" "$2" <<'PY'
import socket, sys, time
rate, secs = int(sys.argv[1]), float(sys.argv[2])
socks = []
for _ in range(64):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.99.0.2", 0)); socks.append(s)
batch, sent, i, start = max(1, rate // 1000), 0, 0, time.time()
while time.time() - start < secs:
    for _ in range(batch):
        socks[i % 64].sendto(b"x" * 64, ("10.99.0.1", 5000 + i % 997)); i += 1
    sent += batch
    ahead = sent / rate - (time.time() - start)
    if ahead > 0: time.sleep(ahead)
PY
}
tck=$(getconf CLK_TCK)
for rate in ${RATES:-0 10000 50000 200000}; do
  ip netns exec "$a" setpriv --bounding-set -all,+bpf,+net_admin,+perfmon --inh-caps=-all -- \
    "$bin" -i fmxm0 "${flags[@]}" >/dev/null 2>/dev/null &
  pid=$!
  sleep 2
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  if [ "$rate" -gt 0 ]; then send "$rate" "$secs"; else sleep "$secs"; fi
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  memlock=0
  for f in /proc/"$pid"/fdinfo/*; do
    m=$(awk '/^memlock:/ {print $2}' "$f" 2>/dev/null || true)
    [ -n "$m" ] && memlock=$((memlock + m))
  done
  kill -INT "$pid"; wait "$pid" || true
  echo "rate ${rate}/s: cpu $(( (t1 - t0) * 1000 * 1000 / tck / secs / 1000 )) millicores, peak RSS $((hwm / 1024)) MiB, BPF maps $((memlock / 1048576)) MiB"
done
