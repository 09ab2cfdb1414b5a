#!/usr/bin/env python3
"""Memory per sleeping task, A/B of two release binaries of the host, in alternating rounds.

    scripts/mem-ab.py OLD_BINARY OLD_WORKER NEW_BINARY NEW_WORKER [N [ROUNDS]]

Each round starts each binary in turn (the first swapping every round) on a free loopback port
with its own default worker (a worker of a contract the old host predates cannot run on it),
the memory store and capacity N + 1000; submits N tasks of duration 120 with the bench's
generator (`http-spawn-bench load`, paced over 4 s); once every task has started and slept a
step, reads the host's RSS and page tables from /proc against what it held before the load.
Prints each round and the medians, new / old. Measures, asserts nothing. Build the generator
first: `cargo build --release -p http-spawn-bench`. N defaults to 20,000, ROUNDS to 3.
"""
import json, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
GEN = f"{ROOT}/target/release/http-spawn-bench"
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def health(p):
    with urllib.request.urlopen(f"http://127.0.0.1:{p}/api/health", timeout=5) as a:
        return json.load(a)
def mem(pid):
    out = {}
    for line in open(f"/proc/{pid}/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmPTE"):
            out[k] = int(v.split()[0])
    return out
def run(binary, worker, n):
    p = port()
    host = subprocess.Popen([binary, "--listen", f"127.0.0.1:{p}", "--module", worker,
        "--capacity", str(n + 1000), "--store", "memory",
        "--cache-dir", f"{ROOT}/target/module-cache"], stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
    try:
        for _ in range(600):
            try: health(p); break
            except OSError: time.sleep(0.05)
        time.sleep(0.5)
        before = mem(host.pid)
        subprocess.run([GEN, "load", "--addr", f"127.0.0.1:{p}", "--secs", "4", "--rate",
            str(n // 4), "--duration", "120"], capture_output=True, check=True)
        for _ in range(600):
            h = health(p)
            if h["tasks"]["started"] >= h["live"] and h["queued"] == 0: break
            time.sleep(0.1)
        time.sleep(1.5)  # every task has slept and stepped once
        h = health(p); after = mem(host.pid); live = h["live"]
        return {"live": live, "rss": (after["VmRSS"] - before["VmRSS"]) / live,
                "pte": (after["VmPTE"] - before["VmPTE"]) / live}
    finally:
        host.send_signal(signal.SIGKILL); host.wait()
def main():
    old, old_worker, new, new_worker = sys.argv[1:5]
    n = int(sys.argv[5]) if len(sys.argv) > 5 else 20000
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 3
    res = {"old": [], "new": []}
    for r in range(rounds):
        for name in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
            b, w = (old, old_worker) if name == "old" else (new, new_worker)
            x = run(b, w, n); res[name].append(x)
            print(f"round {r+1} {name}: live {x['live']}, RSS {x['rss']:.2f} KiB/task, PTE {x['pte']:.2f}", flush=True)
    for k in ("rss", "pte"):
        o = statistics.median(x[k] for x in res["old"]); nn = statistics.median(x[k] for x in res["new"])
        print(f"{k}: old {o:.2f} new {nn:.2f} KiB/task ({nn/o:.3f}x)")
main()
