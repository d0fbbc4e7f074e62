# Sourced by the bandwidth benchmarks: a driver in network namespace $D, its
# executors in $E, one veth pair between them rate-limited by tbf at both ends
# (the driver's network card, shared by every executor). Needs BIN, W, PIDS
# and DEEPDIST_DATA set by the caller.

# Builds the namespaces and the link: net_up RATE SUBNET (e.g. 10.77.0).
net_up() {
  ip netns add "$D"; ip netns add "$E"
  ip link add "${D}v" type veth peer name "${E}v"
  ip link set "${D}v" netns "$D"; ip link set "${E}v" netns "$E"
  ip -n "$D" addr add "$2.1/24" dev "${D}v"; ip -n "$E" addr add "$2.2/24" dev "${E}v"
  for ns in "$D" "$E"; do
    ip -n "$ns" link set lo up; ip -n "$ns" link set "${ns}v" up
    # burst: a few milliseconds at the rate; latency: a queue TCP can fill without drops.
    tc -n "$ns" qdisc add dev "${ns}v" root tbf rate "$1" burst 512kb latency 200ms
  done
}

# Starts the driver and N one-core executors, and waits until every executor
# has registered: cluster_up N SUBNET RUNS_DIR.
cluster_up() {
  ip netns exec "$D" "$BIN" driver --listen "$2.1:7077" --insecure-plaintext \
    --runs-dir "$3" --data-dir "$DEEPDIST_DATA" >"$W/driver.log" 2>&1 & PIDS+=($!)
  for i in $(seq "$1"); do
    ip netns exec "$E" "$BIN" executor --driver "$2.1:7077" --cores 1 --name "e$i" \
      >"$W/executor-$i.log" 2>&1 & PIDS+=($!)
  done
  until ip netns exec "$D" "$BIN" status --driver "$2.1:7077" 2>/dev/null | grep -qx "executors ($1):"; do
    kill -0 "${PIDS[0]}" || { cat "$W/driver.log"; exit 1; }
    sleep 0.2
  done
}

# Stops what runs and removes the namespaces.
net_down() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$D" 2>/dev/null || true; ip netns del "$E" 2>/dev/null || true
}
