#!/usr/bin/env bash
# Apiary's quick start, from a fresh clone with only Rust installed:
#
#   bash examples/quickstart.sh
#
# Builds cloudcontrol, cloudhub and edgecore (release), then runs in a
# scratch directory: cloudcontrol on examples/manifests (no cluster),
# cloudhub, and two edgecores, edge-1 and edge-2, joined with tokens. Once
# both edges serve their pods it prints what to try next. Ctrl-C (SIGINT or
# SIGTERM) stops every process it started.
#
# Options:
#   --bin-dir DIR    run the binaries in DIR (e.g. target/debug) instead of
#                    building release ones
#   --base-port N    listen on ports N to N+7 (default 10000); 0 picks free
#                    ports
#   --dir DIR        the scratch directory (default: a new one in $TMPDIR or
#                    /tmp); logs go to DIR/logs
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=""
base_port=10000
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    --base-port) base_port=${2:?--base-port needs a port}; shift 2 ;;
    --dir) dir=${2:?--dir needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$base_port" in
  '' | *[!0-9]*) echo "--base-port must be a number" >&2; exit 2 ;;
esac

if [ -z "$bin_dir" ]; then
  bash "$root/examples/build-deps.sh"
  echo "building cloudcontrol, cloudhub and edgecore (release; a first build takes minutes)" >&2
  cargo build --release --manifest-path "$root/Cargo.toml" \
    --bin cloudcontrol --bin cloudhub --bin edgecore
  bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
fi
bin_dir=$(cd "$bin_dir" && pwd)
for b in cloudcontrol cloudhub edgecore; do
  [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing" >&2; exit 1; }
done
if [ -z "$dir" ]; then
  dir=$(mktemp -d "${TMPDIR:-/tmp}/apiary-quickstart.XXXXXX")
fi
mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)
logs=$dir/logs

# Port N+i, or 0 (a free one) when the base is 0.
port() {
  if [ "$base_port" = 0 ]; then echo 0; else echo $((base_port + $1)); fi
}

# Every process started, in order; stopped in reverse order.
pids=()
names=()

# Whether process $1 is alive (a zombie is not).
alive() {
  local _pid _comm state
  read -r _pid _comm state _ <"/proc/$1/stat" 2>/dev/null && [ "$state" != Z ]
}

stop() {
  trap - INT TERM EXIT
  local i pid deadline=$((SECONDS + 15))
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
  done
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if alive "$pid"; then
      echo "${names[i]} did not stop within 15 s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  [ ${#pids[@]} -eq 0 ] || echo "stopped; logs are in $logs" >&2
}
# A shell started with SIGINT ignored (a background job of a script, nohup)
# cannot trap it, so Ctrl-C would stop nothing: say so; SIGTERM still works.
if [ -n "$(trap -p INT)" ]; then
  echo "SIGINT is ignored in this shell (started in the background?): Ctrl-C cannot stop it; kill -TERM $$ does" >&2
fi
trap 'stop; exit 130' INT
trap 'stop; exit 143' TERM
trap stop EXIT

# start NAME COMMAND...: runs COMMAND in the background, output to the log.
start() {
  local name=$1
  shift
  "$@" >>"$logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
}

# ready NAME LINE KEY: waits for the process's log to hold a line starting
# with LINE and naming KEY=, and prints the value of KEY.
ready() {
  local name=$1 prefix=$2 key=$3 line deadline=$((SECONDS + 120))
  local pid=${pids[${#pids[@]} - 1]}
  while :; do
    line=$(grep -a -m1 -E "^$prefix( .*)? $key=" "$logs/$name.log" || true)
    if [[ " $line " =~ \ $key=([^ ]+)\  ]]; then
      echo "${BASH_REMATCH[1]}"
      return
    fi
    if ! alive "$pid"; then
      echo "$name exited; the end of $logs/$name.log:" >&2
      tail -n 20 "$logs/$name.log" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$name did not start within 120 s; see $logs/$name.log" >&2
      return 1
    fi
    sleep 0.1
  done
}

# http_get HOST PORT PATH: the response to GET PATH (bash's /dev/tcp).
http_get() {
  (
    exec 3<>"/dev/tcp/$1/$2"
    printf 'GET %s HTTP/1.1\r\nhost: %s\r\nconnection: close\r\n\r\n' "$3" "$1" >&3
    cat <&3
  ) 2>/dev/null
}

# until_served NAME PORT PATH TEXT: waits until the edge's MetaServer
# answers PATH with TEXT in it.
until_served() {
  local deadline=$((SECONDS + 120))
  until http_get 127.0.0.1 "$2" "$3" | grep -q "$4"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "$1 never served $3 with $4; see $logs/$1.log" >&2
      return 1
    fi
    sleep 0.2
  done
}

control_data=$dir/cloudcontrol
rings=$dir/rings
# cloudcontrol and cloudhub agree on the ring files: two shards of 16 MiB
# rings (tuning/small-fleet.toml's size).
shards=2
ring_bytes=16777216

echo "starting in $dir" >&2
start cloudcontrol "$bin_dir/cloudcontrol" --manifests "$root/examples/manifests" \
  --data-dir "$control_data" --ring-dir "$rings" --shards "$shards" --ring-bytes "$ring_bytes" \
  --cert-address "127.0.0.1:$(port 2)"
certs=$(ready cloudcontrol "cloudcontrol ready" certs)

start cloudhub "$bin_dir/cloudhub" --config "$root/tuning/small-fleet.toml" \
  --port "$(port 0)" --shards "$shards" --ring-dir "$rings" \
  --tls-ca-file "$control_data/ca/rootCA.crt" \
  --tls-cert-file "$control_data/certs/server.crt" \
  --tls-private-key-file "$control_data/certs/server.key" \
  --metrics-address "127.0.0.1:$(port 3)"
hub=$(ready cloudhub "cloudhub ready" tls)
metrics=$(ready cloudhub "cloudhub ready" metrics)

metaservers=()
brokers=()
for i in 1 2; do
  node=edge-$i
  home=$dir/$node
  token=$("$bin_dir/cloudcontrol" token --data-dir "$control_data")
  "$bin_dir/edgecore" join --token "$token" --cloud "127.0.0.1:${hub##*:}" \
    --cert-server "127.0.0.1:${certs##*:}" --node "$node" --data-dir "$home" \
    >>"$logs/$node.log" 2>&1 || {
    echo "$node could not join; the end of $logs/$node.log:" >&2
    tail -n 20 "$logs/$node.log" >&2
    exit 1
  }
  # Two edges on one machine: each its own MetaServer and MQTT port.
  config=$home/edgecore.toml
  text=$(<"$config")
  printf '%s\n\n[modules.eventBus.broker]\nlisten = "127.0.0.1:%s"\n' \
    "${text//127.0.0.1:10550/127.0.0.1:$(port $((2 + 2 * i)))}" "$(port $((3 + 2 * i)))" >"$config"
  start "$node" "$bin_dir/edgecore" run --config "$config"
  metaservers+=("$(ready "$node" "edgecore" metaserver)")
  brokers+=("$(ready "$node" "edgecore" mqtt)")
done

until_served edge-1 "${metaservers[0]##*:}" /api/v1/pods web-1
until_served edge-2 "${metaservers[1]##*:}" /api/v1/pods web-2
until_served edge-1 "${metaservers[0]##*:}" \
  /apis/devices.kubeedge.io/v1beta1/namespaces/default/devices/thermometer-1 thermometer-1

mqtt_port=${brokers[0]##*:}
cat <<EOF

Apiary is running: cloudcontrol (manifests from examples/manifests), cloudhub
(edges connect to port ${hub##*:}, metrics on http://${metrics}/metrics) and
two edges, edge-1 and edge-2, each with its own MetaServer and MQTT broker.

Try next:

  # Each edge's MetaServer serves that node's pods, config maps and secrets:
  kubectl --server http://${metaservers[0]} get pods
  kubectl --server http://${metaservers[1]} get pods

  # A thermometer on edge-1 reports a temperature on KubeEdge's twin topic...
  mosquitto_pub -h 127.0.0.1 -p ${mqtt_port} -t '\$hw/events/device/thermometer-1/twin/update' -m '{"event_id":"e1","timestamp":0,"twin":{"temperature":{"actual":{"value":"21.5"},"metadata":{"type":"Updated"}}}}'
  # ...and the cloud shows it as the Device's status:
  ${bin_dir}/cloudcontrol get devices --data-dir ${control_data}

EOF
if ! command -v kubectl >/dev/null 2>&1; then
  echo "  (kubectl is not installed: https://kubernetes.io/docs/tasks/tools/)"
fi
if ! command -v mosquitto_pub >/dev/null 2>&1; then
  echo "  (mosquitto_pub is not installed: apt-get install mosquitto-clients, or brew install mosquitto)"
fi
cat <<EOF
Logs: ${logs}/{cloudcontrol,cloudhub,edge-1,edge-2}.log
Ctrl-C stops everything.
EOF

# Until a signal comes (the traps stop everything) or a process dies.
while :; do
  wait -n || true
  for i in "${!pids[@]}"; do
    if ! alive "${pids[i]}"; then
      echo "${names[i]} exited; the end of $logs/${names[i]}.log:" >&2
      tail -n 20 "$logs/${names[i]}.log" >&2
      exit 1
    fi
  done
done
