#!/usr/bin/env python3
"""Cohort on a simulated consortium: train job specs over three 100 Mbit/s, 25 ms-each-way links.

    sudo deploy/consortium/bench.py [--quick] [--seconds S] [SPEC.yaml ...]

Brings the consortium up (deploy/consortium/consortium.sh: a hub namespace and three institution
namespaces), starts `cohort coordinator` in the hub and one `cohort worker` per institution
(site1, site2, site3; each enrols with a join token), then for each spec (default:
deploy/consortium/specs/*.yaml in name order) submits it, lets it train until it completes or
until S seconds (default 60) of *training* time have passed (then `cohort cancel`), and prints one
row per spec:

  s to 85%         training seconds to the first evaluation with test_accuracy >= 0.85
                   (metric `train_seconds`: evaluation time excluded)
  MB/worker        Cohort's count of bytes each worker sent (metric `bytes_sent_per_worker`, mean over
                   workers, all frames) up to that evaluation (or, marked @Ns, the one after S s)
  veth MB          what each site's veth transmitted over the same interval (its tx_bytes, read in
                   each site namespace, sampled every 0.25 s and interpolated at the evaluation's
                   time), and the ratio of their mean to Cohort's count
  steps/s          the step of the first evaluation at or past S s of training over its train_seconds
  acc@60s          test accuracy at that evaluation (test loss for the character transformer, which
                   has no accuracy goal)

Before each submit the bench waits for the links to go quiet, so a cancelled job's last frames do
not land in the next job's interval. It counts members declared lost (`worker.lost`) and the job's
restarts and marks such rows with `*`. Options: --seconds S, --port, --data-root, --work-dir,
--deadline-slack (default 2), --heartbeat-interval / --missed-heartbeats (passed to the
coordinator), --keep-up.

The figures come from the coordinator's SQLite file (DATA_DIR/state.sqlite, table metrics), read
only. A metric the coordinator does not record yet prints as n/a. Everything started is stopped at
the end, also on Ctrl-C or failure, and the consortium is taken down (--keep-up leaves it).
Needs root and .build/release/cohort (swift build -c release); builds nothing.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from bisect import bisect_right

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CONSORTIUM = os.path.join(HERE, "consortium.sh")
RUN_DIR = os.environ.get("COHORT_CONSORTIUM_RUN", "/run/cohort-consortium")
HUB_NS = "cohort-hub"
HUB_ADDR = "10.77.0.1"
SITES = ["site1", "site2", "site3"]
GOAL = 0.85
QUICK_SPECS = ["1-sync-fp32.yaml", "3-local-h50-fp32.yaml", "5-best-local-h50-int8-overlap.yaml"]

# Measured earlier with PyTorch 2.13 + gloo, 3 ranks, on the same emulated links.
REFERENCE = [
    # name, seconds to 85%, MB sent per rank to 85%, steps/s, accuracy after 60 s
    ("torch+gloo sync DP", 99.0, 519.0, 1 / 0.278, 0.829),
    ("torch DiLoCo H=50", 3.9, 11.6, None, 0.893),
]


def say(msg):
    print(f"[bench] {msg}", flush=True)


def die(msg):
    print(f"[bench] error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


# --- the consortium -------------------------------------------------------------------------


def consortium(*args, check=True):
    r = subprocess.run([CONSORTIUM, *args])
    if check and r.returncode != 0:
        raise RuntimeError(f"consortium.sh {' '.join(args)} failed (exit {r.returncode})")
    return r.returncode


def ns_of(site):
    return HUB_NS if site == "hub" else f"cohort-{site}"


def in_ns(site, argv):
    return ["ip", "netns", "exec", ns_of(site), *argv]


def ns_pid(site):
    """A process inside the site's namespace (its delayer): /proc/PID/net/dev is that namespace's."""
    with open(os.path.join(RUN_DIR, f"delay-{site}.pid")) as f:
        return int(f.read().strip())


def veth_tx_sysfs(site):
    """tx_bytes of the site's link as /sys/class/net shows it inside the namespace."""
    out = subprocess.run(in_ns(site, ["cat", "/sys/class/net/veth-hub/statistics/tx_bytes"]),
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def veth_tx_fast(pids):
    """The same counters without a process per read: /proc/PID/net/dev of a process in each namespace."""
    out = []
    for pid in pids:
        with open(f"/proc/{pid}/net/dev") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name.strip() == "veth-hub":
                    out.append(int(rest.split()[8]))  # transmit bytes
                    break
            else:
                raise RuntimeError(f"no veth-hub in /proc/{pid}/net/dev")
    return out


def delayer_cpu_seconds():
    """CPU seconds (user + system) the four delayers have used so far."""
    total = 0
    hz = os.sysconf("SC_CLK_TCK")
    for site in ["hub", *SITES]:
        with open(f"/proc/{ns_pid(site)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / hz  # utime, stime
    return total


def cpu_busy(seconds):
    """Fraction of all CPUs busy over the next `seconds` (from /proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    t0, i0 = read()
    time.sleep(seconds)
    t1, i1 = read()
    return 1 - (i1 - i0) / max(t1 - t0, 1)


def ping_rtt(site):
    r = subprocess.run(in_ns("hub", ["ping", "-U", "-c", "5", "-i", "0.2", "-q", f"10.77.{site[-1]}.2"]),
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if "min/avg/max" in line:
            return float(line.split("=")[1].split("/")[1])
    return None


# --- cohort processes ----------------------------------------------------------------------


class Cluster:
    def __init__(self, binary, work, port, data_root, slack, extra=()):
        self.binary, self.work, self.port, self.data_root, self.slack = binary, work, port, data_root, slack
        self.extra = list(extra)
        self.addr = f"{HUB_ADDR}:{port}"
        self.data_dir = os.path.join(work, "coordinator")
        self.procs = []  # (name, Popen, log file)
        self.env = dict(os.environ, COHORT_KEY=os.path.join(self.data_dir, "admin.key"), COHORT_COORDINATOR=self.addr)
        self.db = None

    def spawn(self, name, site, argv):
        log = open(os.path.join(self.work, f"{name}.log"), "w")
        p = subprocess.Popen(in_ns(site, argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True)
        self.procs.append((name, p, log))
        return p

    def cli(self, *args, check=True, timeout=30):
        r = subprocess.run(in_ns("hub", [self.binary, *args]), capture_output=True, text=True, env=self.env,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"cohort {' '.join(args)}: {(r.stderr or r.stdout).strip()}")
        return r

    def log_tail(self, name, lines=15):
        path = os.path.join(self.work, f"{name}.log")
        try:
            with open(path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def start(self):
        os.makedirs(self.data_dir, exist_ok=True)
        coord = self.spawn("coordinator", "hub", [self.binary, "coordinator", "--data-dir", self.data_dir,
                                                  "--listen", self.addr, "--deadline-slack", str(self.slack),
                                                  *self.extra])
        deadline = time.time() + 30
        while True:
            if coord.poll() is not None:
                raise RuntimeError(f"the coordinator exited ({coord.returncode}):\n{self.log_tail('coordinator')}")
            if os.path.exists(self.env["COHORT_KEY"]) and self.cli("jobs", "--timeout", "1", check=False).returncode == 0:
                break
            if time.time() > deadline:
                raise RuntimeError(f"the coordinator did not answer on {self.addr} within 30 s:\n{self.log_tail('coordinator')}")
            time.sleep(0.2)
        self.db = sqlite3.connect(f"file:{self.data_dir}/state.sqlite?mode=ro", uri=True, timeout=10)
        say(f"coordinator on {self.addr} in {HUB_NS} (CURVE on, --deadline-slack {self.slack}{' ' + ' '.join(self.extra) if self.extra else ''}), "
            f"state in {self.data_dir}")
        for site in SITES:
            token = self.cli("admin", "token", "--institution", site, "--role", "worker", "--ttl", "1h").stdout.strip()
            name = f"{site}-01"
            self.spawn(name, site, [self.binary, "worker", "--coordinator", self.addr, "--state-dir",
                                    os.path.join(self.work, name), "--join", token, "--name", name, "--threads", "1",
                                    "--data-root", self.data_root])
        self.wait_idle(60)
        say(f"3 workers enrolled and idle: {', '.join(s + '-01 (' + s + ')' for s in SITES)}, 1 thread each")

    def check_alive(self):
        for name, p, _ in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited ({p.returncode}); its log ends:\n{self.log_tail(name)}")

    def wait_idle(self, seconds):
        deadline = time.time() + seconds
        while True:
            self.check_alive()
            rows = self.db.execute("SELECT name, state FROM workers").fetchall()
            idle = [n for n, s in rows if s == "idle"]
            if len(idle) >= len(SITES):
                return
            if time.time() > deadline:
                raise RuntimeError(f"workers not idle after {seconds} s: {rows}")
            time.sleep(0.25)

    def stop(self):
        for _, p, _ in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        end = time.time() + 10
        for name, p, log in reversed(self.procs):
            try:
                p.wait(max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                say(f"{name} ignored SIGTERM for 10 s; killing it")
                p.kill()
                p.wait()
            log.close()
        self.procs = []
        if self.db:
            self.db.close()
            self.db = None


# --- one spec --------------------------------------------------------------------------------


def metrics_by_step(db, job):
    rows = db.execute("SELECT step, name, value, at FROM metrics WHERE job_id = ? ORDER BY step", (job,)).fetchall()
    evals = {}
    for step, name, value, at in rows:
        e = evals.setdefault(step, {"step": step, "at": at})
        e[name] = value
        e["at"] = max(e["at"], at)
    return [evals[s] for s in sorted(evals)]


def interpolate(samples, t):
    """Counters at wall time t from (time, [counters]) samples, linearly between the two around t."""
    i = bisect_right([x[0] for x in samples], t)
    if i == 0:
        return samples[0][1]
    if i == len(samples):
        return samples[-1][1]
    (t0, c0), (t1, c1) = samples[i - 1], samples[i]
    w = (t - t0) / (t1 - t0) if t1 > t0 else 1
    return [a + w * (b - a) for a, b in zip(c0, c1)]


class Sampler(threading.Thread):
    """Reads the sites' veth tx counters every `every` seconds (a round's frames leave in bursts:
    fine samples keep the interpolation at an evaluation's time close to the truth)."""

    def __init__(self, pids, every=0.05):
        super().__init__(daemon=True)
        self.pids, self.every = pids, every
        self.samples = [(time.time(), veth_tx_fast(pids))]
        self.halt = threading.Event()

    def run(self):
        while not self.halt.wait(self.every):
            try:
                self.samples.append((time.time(), veth_tx_fast(self.pids)))
            except (OSError, RuntimeError):
                return

    def stop(self):
        self.halt.set()
        if self.is_alive():
            self.join()
        try:
            self.samples.append((time.time(), veth_tx_fast(self.pids)))
        except (OSError, RuntimeError):
            pass
        return self.samples


def summarize(row, evals, started, samples, seconds):
    """The table's figures from a job's evaluations, its start (wall) and the veth samples."""
    row["evals"] = len(evals)
    if not evals:
        row["error"] = f"{row.get('state')} with no evaluation recorded" + (
            f" (members lost {row['lost']} times: no heartbeat during inner steps; try --missed-heartbeats 300)"
            if row.get("lost") else "")
        return row
    have_train = any("train_seconds" in e for e in evals)
    row["have_train_seconds"] = have_train
    row["wall_run_s"] = evals[-1]["at"] - started if started else None
    # evaluations within the training budget (train_seconds when recorded, else wall time since running)
    def budget_time(e):
        return e["train_seconds"] if "train_seconds" in e else (e["at"] - started if started else None)
    # "after S s of training": the first evaluation at or past S s (the one that stopped the job),
    # or the last one when the job completed sooner
    last = next((e for e in evals if budget_time(e) is not None and budget_time(e) >= seconds), evals[-1])
    row["last_step"] = last["step"]
    row["last_t"] = budget_time(last)
    row["acc_60"] = last.get("test_accuracy")
    row["loss_60"] = last.get("test_loss")
    row["steps_per_s"] = last["step"] / last["train_seconds"] if "train_seconds" in last and last["train_seconds"] > 0 else None
    row["wall_steps_per_s"] = last["step"] / row["last_t"] if row["last_t"] else None
    if row.get("goal") is None:  # no accuracy goal: test loss at the budget, bytes up to then
        row["acc_60"] = None
    goal = next((e for e in evals if e.get("test_accuracy", 0) >= row["goal"]), None) if row.get("goal") else None
    row["goal_reached"] = goal is not None
    ref = goal if goal is not None else last
    row["ref_step"] = ref["step"]
    row["t_goal"] = goal.get("train_seconds") if goal is not None else None
    row["t_goal_wall"] = (goal["at"] - started) if goal is not None and started else None
    # Cohort's count, made cumulative where it fell back (a worker's count restarts with each
    # assignment, so a job restarted after a lost member starts counting again from zero).
    counted, base, prev, row["bytes_reset"] = None, 0.0, None, False
    for e in evals:
        if "bytes_sent_per_worker" in e:
            v = e["bytes_sent_per_worker"]
            if prev is not None and v < prev:
                base += prev
                row["bytes_reset"] = True
            prev = v
            counted = base + v
        if e is ref:
            break
    row["cohort_mb"] = counted / 1e6 if counted is not None and "bytes_sent_per_worker" in ref else None
    row["coord_in_mb"] = ref["bytes_in"] / len(SITES) / 1e6 if "bytes_in" in ref else None
    tx_at = interpolate(samples, ref["at"])
    row["veth_mb"] = [(b - a) / 1e6 for a, b in zip(samples[0][1], tx_at)]
    mean_veth = sum(row["veth_mb"]) / len(row["veth_mb"])
    row["ratio"] = mean_veth / row["cohort_mb"] if row["cohort_mb"] else None
    return row


def is_transformer(spec_path):
    """Specs without an accuracy goal: the character transformer (its test loss is reported instead)."""
    with open(spec_path) as f:
        return re.search(r"^\s*kind:\s*transformer\b", f.read(), re.M) is not None


def run_spec(cluster, spec_path, seconds):
    name = os.path.splitext(os.path.basename(spec_path))[0]
    row = {"name": name, "error": None}
    cluster.wait_idle(60)
    pids = [ns_pid(s) for s in SITES]
    # Let the previous job's last frames drain (a cancelled job's workers may still be sending a
    # round's delta), so this job's interval counts only its own traffic: wait for the links to go
    # quiet (under 20 kB/s, heartbeats only) for a second, at most 15 s.
    quiet_since, last = time.time(), veth_tx_fast(pids)
    deadline = time.time() + 15
    while time.time() < deadline and time.time() - quiet_since < 1.0:
        time.sleep(0.25)
        now = veth_tx_fast(pids)
        if max(b - a for a, b in zip(last, now)) > 5000:
            quiet_since = time.time()
        last = now
    goal = GOAL if not is_transformer(spec_path) else None
    row["goal"] = goal
    tx0_sysfs = [veth_tx_sysfs(s) for s in SITES]
    sampler = Sampler(pids)
    cpu0 = delayer_cpu_seconds()
    r = cluster.cli("submit", "--json", spec_path, check=False)
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip()
        problems = [l.strip() for l in msg.splitlines()[1:] if l.strip()] or [msg]
        row["error"] = f"rejected by this cohort binary ({len(problems)} problem{'s' if len(problems) > 1 else ''}; " \
                       f"below)"
        row["detail"] = problems
        return row
    sampler.start()
    try:
        return follow_job(cluster, row, name, json.loads(r.stdout)["job"], sampler, pids, tx0_sysfs, cpu0, seconds)
    finally:
        if sampler.is_alive():
            sampler.stop()


def follow_job(cluster, row, name, job, sampler, pids, tx0_sysfs, cpu0, seconds):
    row["job"] = job
    say(f"{name}: job {job} submitted")
    t_submit = time.time()
    started = None
    ended = None
    cancelled = False
    wall_limit = 4 * seconds + 120  # training cap plus evaluations, placement and slack
    while True:
        time.sleep(0.25)
        cluster.check_alive()
        state, running_at, reason, step = cluster.db.execute(
            "SELECT state, running_at, reason, step FROM jobs WHERE id = ?", (job,)).fetchone()
        if state in ("completed", "failed", "cancelled"):
            ended = state
            break
        if state != "running":
            if started is None and time.time() - t_submit > 120:
                row["error"] = f"never started: {state} ({reason})"
                cluster.cli("cancel", str(job), check=False)
                return row
            continue
        if started is None:
            started = running_at or time.time()
        evals = metrics_by_step(cluster.db, job)
        trained = max((e["train_seconds"] for e in evals if "train_seconds" in e), default=None)
        wall = time.time() - started
        if not cancelled and ((trained is not None and trained >= seconds)
                              or (evals and trained is None and wall >= seconds)
                              or (not evals and wall >= 2 * seconds)
                              or wall >= wall_limit):
            if evals and trained is None and wall < wall_limit:
                say(f"{name}: this cohort records no train_seconds metric; stopping after {seconds:g} s of wall time instead")
            elif not evals:
                say(f"{name}: no evaluation after {wall:.0f} s of wall time; stopping")
            elif wall >= wall_limit:
                say(f"{name}: still short of {seconds} s of training after {wall:.0f} s of wall time; stopping")
            cluster.cli("cancel", str(job), check=False)
            cancelled = (f"cancelled at {seconds:g} s of training" if trained is not None and trained >= seconds
                         else f"cancelled after {wall:.0f} s of wall time")
    samples = sampler.stop()
    row["delayer_cpu_pct"] = 100 * (delayer_cpu_seconds() - cpu0) / (samples[-1][0] - samples[0][0])
    tx1_sysfs = [veth_tx_sysfs(s) for s in SITES]
    row["state"] = cancelled if cancelled and ended == "cancelled" else ended
    row["veth_total_mb"] = [(b - a) / 1e6 for a, b in zip(tx0_sysfs, tx1_sysfs)]
    dropped = cluster.db.execute("SELECT COUNT(*) FROM events WHERE job_id = ? AND kind = 'step.dropped'",
                                 (job,)).fetchone()[0]
    row["dropped"] = dropped
    row["lost"] = cluster.db.execute("SELECT COUNT(*) FROM events WHERE job_id = ? AND kind = 'worker.lost'",
                                     (job,)).fetchone()[0]
    row["restarts"] = cluster.db.execute("SELECT COUNT(*) FROM events WHERE job_id = ? AND kind = 'job.waiting'",
                                         (job,)).fetchone()[0]
    if row["lost"]:
        say(f"{name}: {row['lost']} times a member was declared lost (no heartbeat); the job restarted {row['restarts']} times")
    return summarize(row, metrics_by_step(cluster.db, job), started, samples, seconds)


# --- output ----------------------------------------------------------------------------------


def fmt(v, spec="{:.1f}", na="n/a"):
    return na if v is None else spec.format(v)


def print_table(rows, seconds):
    hdr = ["setting", "s to 85%", "MB/worker", "veth MB site1/site2/site3", "veth/Cohort", "steps/s", f"acc@{seconds:g}s"]
    lines = []
    for r in rows:
        if r.get("error"):
            lines.append([r["name"], r["error"]])
            continue
        to = "" if r["goal_reached"] else f" @{r['last_t']:.0f}s"  # bytes at the last evaluation when 85% was not reached
        acc = fmt(r["acc_60"], "{:.3f}") if r["acc_60"] is not None else ("loss " + fmt(r["loss_60"], "{:.3f}"))
        t_goal = fmt(r["t_goal"]) if r["goal_reached"] else ("-" if r.get("goal") is None else f">{seconds:g}")
        lines.append([r["name"] + (" *" if r.get("lost") else ""), t_goal,
                      ("≥" if r.get("bytes_reset") else "") + fmt(r["cohort_mb"]) + (to if r["cohort_mb"] is not None else ""),
                      "/".join(f"{v:.1f}" for v in r["veth_mb"]) + to, fmt(r["ratio"], "{:.3f}"),
                      fmt(r["steps_per_s"], "{:.2f}"), acc])
    for name, t, mb, sps, acc in REFERENCE:
        lines.append([f"ref: {name}", fmt(t), fmt(mb), "-", "-", fmt(sps, "{:.2f}", "-"), fmt(acc, "{:.3f}")])
    widths = [max(len(hdr[i]), *(len(l[i]) for l in lines if len(l) > 2)) for i in range(len(hdr))]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(hdr, widths)))
    print("  ".join("-" * w for w in widths))
    for l in lines:
        if len(l) == 2:
            print(l[0].ljust(widths[0]) + "  " + l[1])
        else:
            print("  ".join(c.ljust(w) for c, w in zip(l, widths)))
    if any(r.get("lost") for r in rows):
        print("* members were declared lost and the job restarted while it ran: see the notes")
    print()
    for r in rows:
        if r.get("error"):
            for p in r.get("detail", []):
                print(f"  {r['name']}: {p}")
            continue
        notes = [f"job {r['job']} {r['state']}", f"{r['evals']} evaluations"]
        if not r["have_train_seconds"]:
            notes.append("no train_seconds metric: times are wall clock since the job ran, evaluations included"
                         + (f"; 85% at {r['t_goal_wall']:.1f} s wall" if r["t_goal_wall"] is not None else "")
                         + (f"; {r['wall_steps_per_s']:.2f} steps/s wall" if r["wall_steps_per_s"] else ""))
        if r["cohort_mb"] is None and r["coord_in_mb"] is not None:
            notes.append(f"no bytes_sent_per_worker metric: the coordinator's bytes_in / 3 at step {r['ref_step']} is "
                         f"{r['coord_in_mb']:.1f} MB (veth/that {sum(r['veth_mb']) / 3 / r['coord_in_mb']:.3f})"
                         if r["coord_in_mb"] else "no bytes_sent_per_worker metric")
        notes.append(f"veth tx over the whole run {'/'.join(f'{v:.1f}' for v in r['veth_total_mb'])} MB")
        notes.append(f"the 4 delayers used {r['delayer_cpu_pct']:.1f}% of a core")
        if r.get("lost"):
            notes.append(f"a member was declared lost {r['lost']} times (no heartbeat for the coordinator's window) and "
                         f"the job went back to waiting {r['restarts']} times: figures include those restarts "
                         f"(a worker busy with inner steps does not heartbeat; --missed-heartbeats 300 works around it)")
        if r.get("bytes_reset"):
            notes.append("bytes_sent_per_worker fell back to zero when the job restarted: the MB/worker shown adds the "
                         "count before each restart (a lower bound) and the ratio is against that")
        if r["dropped"]:
            notes.append(f"{r['dropped']} step.dropped events (a member missed a step's deadline)")
        print(f"  {r['name']}: " + "; ".join(notes))
    print()


# --- main ------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("specs", nargs="*", help="job specs (default: deploy/consortium/specs/*.yaml, in name order)")
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke check: {', '.join(QUICK_SPECS)} for 15 s of training each")
    ap.add_argument("--seconds", type=float, help="training seconds per spec (default 60; 15 with --quick)")
    ap.add_argument("--port", type=int, default=7700, help="coordinator api port (control +1, data +2; default 7700)")
    ap.add_argument("--data-root", default=os.environ.get("COHORT_DATA_ROOT",
                                                          os.path.expanduser("~/.local/share/cohort/datasets")),
                    help="the workers' data root (default $COHORT_DATA_ROOT, else ~/.local/share/cohort/datasets)")
    ap.add_argument("--work-dir", help="coordinator and worker state and logs (default: a new /tmp directory)")
    ap.add_argument("--deadline-slack", type=float, default=2.0,
                    help="the coordinator's --deadline-slack (default 2: 3 workers share 2 cores here)")
    ap.add_argument("--heartbeat-interval", type=float, help="the coordinator's --heartbeat-interval (default: its own)")
    ap.add_argument("--missed-heartbeats", type=int, help="the coordinator's --missed-heartbeats (default: its own)")
    ap.add_argument("--keep-up", action="store_true", help="leave the consortium up at the end")
    args = ap.parse_args()
    seconds = args.seconds if args.seconds is not None else (15.0 if args.quick else 60.0)

    if os.geteuid() != 0:
        die(f"must run as root (network namespaces): sudo {sys.argv[0]} {' '.join(sys.argv[1:])}")
    binary = os.path.join(REPO, ".build", "release", "cohort")
    if not os.access(binary, os.X_OK):
        die(f"{binary} is missing: build it first with `swift build -c release` in {REPO} (deploy/setup.sh does)")
    if args.specs:
        specs = [os.path.abspath(s) for s in args.specs]
    elif args.quick:
        specs = [os.path.join(HERE, "specs", s) for s in QUICK_SPECS]
    else:
        specs = sorted(glob.glob(os.path.join(HERE, "specs", "*.yaml")))
    for s in specs:
        if not os.path.isfile(s):
            die(f"no such spec: {s}")
    data_root = os.path.abspath(args.data_root)
    if not all(os.path.isfile(os.path.join(data_root, d, "dataset.yaml")) for d in ("fashion-mnist", "poems")):
        say(f"writing the demo datasets' manifests under {data_root} (deploy/datasets/install.sh)")
        if subprocess.run([os.path.join(REPO, "deploy", "datasets", "install.sh"), data_root]).returncode != 0:
            die("deploy/datasets/install.sh failed: run deploy/setup.sh (it installs dataset-fashion-mnist and fortunes-zh)")
    work = args.work_dir or tempfile.mkdtemp(prefix="cohort-consortium-bench.")
    os.makedirs(work, exist_ok=True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    cluster = None
    rows = []
    rc = 0
    try:
        consortium("up")
        busy = subprocess.run(["ip", "netns", "pids", HUB_NS], capture_output=True, text=True).stdout.split()
        if [p for p in busy if p != str(ns_pid("hub"))]:
            raise RuntimeError(f"processes already run in {HUB_NS} ({' '.join(busy)}): a bench still running? "
                               f"Stop it, or: {CONSORTIUM} down")
        rtts = {s: ping_rtt(s) for s in SITES}
        version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
        busy = cpu_busy(1.0)
        if busy > 0.2:
            say(f"warning: the CPUs were {100 * busy:.0f}% busy over the last second before the bench: "
                "something else is running, and the figures will suffer")
        say(f"cohort {version}; {os.cpu_count()} cores; links 100 Mbit/s each way; ping -U RTT hub->site "
            + ", ".join(f"{s} {fmt(v, '{:.1f}')} ms" for s, v in rtts.items()))
        extra = []
        if args.heartbeat_interval is not None:
            extra += ["--heartbeat-interval", str(args.heartbeat_interval)]
        if args.missed_heartbeats is not None:
            extra += ["--missed-heartbeats", str(args.missed_heartbeats)]
        cluster = Cluster(binary, work, args.port, data_root, args.deadline_slack, extra)
        cluster.start()
        for spec in specs:
            row = run_spec(cluster, spec, seconds)
            rows.append(row)
            if row.get("error"):
                say(f"{row['name']}: {row['error'].replace('; below', '')}"
                    + (": " + " | ".join(row["detail"]) if row.get("detail") else ""))
            else:
                say(f"{row['name']}: {row['state']}, step {row['last_step']}, "
                    + (f"test accuracy {row['acc_60']:.3f}" if row["acc_60"] is not None else f"test loss {fmt(row['loss_60'], '{:.3f}')}"))
        print_table(rows, seconds)
    except Interrupted as e:
        say(f"interrupted ({e}); stopping everything")
        if rows:
            print_table(rows, seconds)
        rc = 130
    except Exception as e:
        print(f"[bench] error: {e}", file=sys.stderr, flush=True)
        if rows:
            print_table(rows, seconds)
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if cluster:
            cluster.stop()
        if not args.keep_up:
            consortium("down", check=False)
        say(f"logs and state: {work}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
