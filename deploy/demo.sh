#!/usr/bin/env bash
# The quick start, on one machine: installs what is missing, builds in release mode, starts a
# coordinator and three workers of two institutions on loopback (each worker enrols its own key
# with a join token), submits deploy/examples/quickstart-fashion.yaml (an MLP on Fashion-MNIST),
# shows live progress, prints the final test accuracy and the model file, and stops every
# process it started, also on Ctrl-C.
#   deploy/demo.sh            env: COHORT_DEMO_PORT (default 7650), COHORT_DEMO_DIR (default: a new temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/setup.sh

bin=.build/release/cohort
run="${COHORT_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/cohort-demo.XXXXXX")}"
mkdir -p "$run"
port="${COHORT_DEMO_PORT:-7650}"
pids=() workers=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "[demo] stopped the coordinator and workers; their logs are in $run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The demo's own coordinator, whatever a user's shell says about another one.
unset COHORT_SERVER_KEY

echo "[demo] coordinator on 127.0.0.1:$port (CURVE on), state in $run/coordinator"
"$bin" coordinator --data-dir "$run/coordinator" --listen "127.0.0.1:$port" --ipc > "$run/coordinator.log" 2>&1 &
pids+=($!)
export COHORT_KEY="$run/coordinator/admin.key" COHORT_COORDINATOR="127.0.0.1:$port"
ready=no
for _ in $(seq 1 100); do
    [ -f "$COHORT_KEY" ] && "$bin" jobs --timeout 1 >/dev/null 2>&1 && { ready=yes; break; }
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$run/coordinator.log"; echo "[demo] the coordinator did not start: its log is above (ports $port-$((port + 2)) in use? set COHORT_DEMO_PORT)"; exit 1; }
    sleep 0.2
done
if [ "$ready" != yes ]; then
    tail -n 20 "$run/coordinator.log"
    echo "[demo] the coordinator is running but does not answer on 127.0.0.1:$port (its log: $run/coordinator.log)"
    exit 1
fi

for site in pku:pku-01 pku:pku-02 sjtu:sjtu-01; do
    institution="${site%%:*}" name="${site#*:}"
    token="$("$bin" admin token --institution "$institution" --role worker --ttl 1h 2>/dev/null)"
    echo "[demo] worker $name of $institution enrols with a single-use join token"
    "$bin" worker --state-dir "$run/$name" --join "$token" --name "$name" --threads 1 > "$run/$name.log" 2>&1 &
    pids+=($!)
    workers+=("$name")
done

job="$("$bin" submit --json deploy/examples/quickstart-fashion.yaml | sed -n 's/.*"job" : \([0-9]*\).*/\1/p')"
echo "[demo] submitted job $job: $(grep -c . deploy/examples/quickstart-fashion.yaml) lines of deploy/examples/quickstart-fashion.yaml"
# Watched in the background, so that SIGTERM stops the demo at once (bash runs a trap only
# between commands), and so that a worker that dies is reported instead of waited for.
"$bin" watch "$job" &
watcher=$!
pids+=("$watcher") # a background command ignores SIGINT: stopped with the others
while kill -0 "$watcher" 2>/dev/null; do
    for i in "${!workers[@]}"; do
        if ! kill -0 "${pids[$((i + 1))]}" 2>/dev/null; then
            kill -TERM "$watcher" 2>/dev/null || true
            log="$run/${workers[$i]}.log"
            tail -n 20 "$log"
            echo "[demo] a worker stopped before the job ended (its log: $log)"
            exit 1
        fi
    done
    sleep 0.5
done
wait "$watcher" || { echo "[demo] job $job did not complete: see $run/coordinator.log"; exit 1; }
"$bin" status "$job" --json > "$run/status.json"
python3 - "$run/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
acc = s.get("metrics", {}).get("test_accuracy", {}).get("value")
cks = [e["detail"].split(": ", 1)[1] for e in s["events"] if e["kind"] == "checkpoint.written"]
if acc is None or not cks:
    print(f"[demo] job {s['job']['id']} {s['job']['state']}, but it reported no test accuracy or no model file")
    sys.exit(1)
print(f"[demo] job {s['job']['id']} {s['job']['state']}: test accuracy {100 * acc:.2f}% on Fashion-MNIST's 10,000 test images")
print(f"[demo] model (safetensors, loads with Python's safetensors): {cks[-1]}")
PY
