#!/usr/bin/env python3
"""A/B of two release binaries of the host, on this machine, in alternating rounds.

    scripts/ab.py OLD_BINARY NEW_BINARY [--store memory|sqlite] [--duration N] [--rate R]
                  [--secs S] [--rounds K] [--rust-log FILTER] [--arg FLAG ...]
                  [--old-worker WASM] [--new-arg FLAG ...]

Each round starts each binary in turn (the first swapping every round, so that the machine's
drift hits both) on a free loopback port with the default worker, `--capacity 20000` and a
fresh store (`--store memory`, or a new SQLite file with its defaults: `--store-sync full`),
loads it with the bench's own generator (`http-spawn-bench load`: 64 keep-alive connections,
unpaced unless `--rate`), waits for every task to end, and reads from /proc the host's CPU (and its store writer thread's) over
that span. Prints each round and the medians: accepted/s, p50/p99, and host CPU per ended task,
with new / old and the spread of the round-by-round ratios. Measures, asserts nothing.
Build the generator first: `cargo build --release -p http-spawn-bench`. Both run the default
worker `make build-guest` built, unless `--old-worker` gives the old binary its own (a worker
built against a contract the old host predates cannot run on it). `--new-arg` adds flags to the
new side only: the same binary twice, with and without a setting, measures what it costs.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GENERATOR = os.path.join(ROOT, "target/release/http-spawn-bench")
WORKER = os.path.join(ROOT, "target/wasm32-wasip2/guest/http_spawn_guest.wasm")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_secs(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def writer_secs(pid):
    """CPU of the host's store writer thread (zero on the memory store)."""
    total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as comm:
                if comm.read().strip() != "store-writer":
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
        except OSError:
            pass
    return total


def health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as answer:
        return json.load(answer)


def run_once(binary, worker, args, scratch, extra=()):
    port = free_port()
    store = "memory" if args.store == "memory" else f"sqlite:{scratch}/tasks-{port}.db"
    command = [binary, "--listen", f"127.0.0.1:{port}", "--module", worker,
               "--capacity", "20000", "--store", store,
               "--cache-dir", os.path.join(ROOT, "target/module-cache")] + args.arg + list(extra)
    env = dict(os.environ, RUST_LOG=args.rust_log)
    # The console to a file, as a service manager takes it; removed with the scratch directory.
    console = open(os.path.join(scratch, f"console-{port}.log"), "w")
    host = subprocess.Popen(command, env=env, stdout=console,
                            stderr=open(os.path.join(scratch, f"host-{port}.log"), "w"))
    try:
        deadline = time.time() + 60
        while True:
            try:
                health(port)
                break
            except OSError:
                if host.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"{binary} did not start; see {scratch}")
                time.sleep(0.05)
        before_cpu, before_ended = cpu_secs(host.pid), health(port)["tasks"]["ended"]
        before_writer = writer_secs(host.pid)
        load = [GENERATOR, "load", "--addr", f"127.0.0.1:{port}", "--secs", str(args.secs)]
        if args.duration is not None:
            load += ["--duration", str(args.duration)]
        if args.rate is not None:
            load += ["--rate", str(args.rate)]
        out = subprocess.run(load, capture_output=True, text=True, check=True).stdout
        deadline = time.time() + 120
        while True:
            now = health(port)
            if now["live"] == 0 and now["queued"] == 0:
                break
            if time.time() > deadline:
                raise SystemExit(f"{binary}: tasks still live after 120 s")
            time.sleep(0.1)
        cpu = cpu_secs(host.pid) - before_cpu
        writer = writer_secs(host.pid) - before_writer
        ended = now["tasks"]["ended"] - before_ended
        match = re.search(r"accepted (\d+) \((\d+)/s\).*p50 ([\d.]+) ms, p99 ([\d.]+) ms", out)
        accepted, per_sec, p50, p99 = match.groups()
        return {
            "accepted": int(accepted),
            "per_sec": int(per_sec),
            "p50": float(p50),
            "p99": float(p99),
            "cpu_us_per_task": cpu / max(ended, 1) * 1e6,
            "writer_us_per_task": writer / max(ended, 1) * 1e6,
            "ended": ended,
        }
    finally:
        host.send_signal(signal.SIGKILL)
        host.wait()
        console.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    parser.add_argument("--duration", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--secs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rust-log", default="warn",
                        help="RUST_LOG for both hosts; their console goes to a file")
    parser.add_argument("--old-worker", default=WORKER,
                        help="the default worker the old binary runs [default: the built one]")
    parser.add_argument("--arg", action="append", default=[],
                        help="a flag for both hosts (repeat; e.g. --arg=--worker-threads --arg=1)")
    parser.add_argument("--new-arg", action="append", default=[],
                        help="a flag for the new host only (repeat)")
    args = parser.parse_args()
    for needed in (GENERATOR, WORKER, args.old_worker, args.old, args.new):
        if not os.path.isfile(needed):
            raise SystemExit(f"{needed} is missing")
    scratch = tempfile.mkdtemp(prefix="http-spawn-ab-")
    results = {"old": [], "new": []}
    try:
        for round_no in range(args.rounds):
            order = ["old", "new"] if round_no % 2 == 0 else ["new", "old"]
            for name in order:
                worker = args.old_worker if name == "old" else WORKER
                extra = args.new_arg if name == "new" else []
                result = run_once(getattr(args, name), worker, args, scratch, extra)
                results[name].append(result)
                print(f"round {round_no + 1} {name}: {result['per_sec']}/s accepted "
                      f"({result['accepted']}), p50 {result['p50']} ms, p99 {result['p99']} ms, "
                      f"{result['cpu_us_per_task']:.1f} µs CPU per ended task "
                      f"(writer {result['writer_us_per_task']:.1f}) "
                      f"({result['ended']} ended)", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(f"store {args.store}, duration {args.duration}, rate {args.rate}, "
          f"{args.secs} s, {args.rounds} rounds; medians, new ÷ old (round-by-round range):")
    for key, label in [("per_sec", "accepted/s"), ("p50", "p50 ms"), ("p99", "p99 ms"),
                       ("cpu_us_per_task", "host CPU µs per ended task"),
                       ("writer_us_per_task", "store writer CPU µs per task")]:
        old = statistics.median(r[key] for r in results["old"])
        new = statistics.median(r[key] for r in results["new"])
        ratios = [n[key] / o[key] for o, n in zip(results["old"], results["new"]) if o[key]]
        if not ratios:
            continue
        print(f"  {label:<28} old {old:>10.1f}  new {new:>10.1f}  "
              f"{new / old if old else float('nan'):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})")


if __name__ == "__main__":
    sys.exit(main())
