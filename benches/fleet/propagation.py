#!/usr/bin/env python3
"""How long a state change made on one fleet replica takes to be in force
on every other one.

Starts a real single-member etcd (Debian's `etcd-server`) and REPLICAS
cutover processes (the release binary) on 127.0.0.1, all in one fleet. Each
round sends an override of route `shop` to one replica (in turn) and polls
every other replica's `/status` until its effective split is the new one.
Prints, over the rounds, the time until the first and until the last
replica had it: median, 90th percentile and worst.

Not part of `cargo test`. A benchmark: the figures depend on the machine
and its load; polling adds up to POLL_MS to each reading.

    cargo build --release && benches/fleet/propagation.py
    REPLICAS=10 ROUNDS=30 POLL_MS=5 benches/fleet/propagation.py
"""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
BINARY = os.environ.get("CUTOVER", os.path.join(REPO, "target", "release", "cutover"))
REPLICAS = int(os.environ.get("REPLICAS", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "30"))
POLL = int(os.environ.get("POLL_MS", "5")) / 1000.0
DEADLINE = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, body=None, timeout=5.0):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


def effective(admin):
    status = request("GET", f"http://127.0.0.1:{admin}/status")
    for route in status.get("routes", []):
        if route.get("name") == "shop":
            return route.get("effective")
    return None


def wait_for(what, condition, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.05)
    sys.exit(f"error: not within {limit:.0f} s: {what}")


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    if shutil.which("etcd") is None:
        sys.exit("error: no `etcd` on the PATH (apt-get install etcd-server)")
    if not os.access(BINARY, os.X_OK):
        sys.exit(f"error: no cutover binary at {BINARY} (cargo build --release)")
    tmp = tempfile.mkdtemp(prefix="cutover-fleet-bench-")
    children = []
    try:
        client, peer = free_port(), free_port()
        etcd = subprocess.Popen(
            ["etcd", "--name", "bench", "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "etcd.log"), "w"))
        children.append(etcd)
        wait_for("etcd answers", lambda: request(
            "POST", f"http://127.0.0.1:{client}/v3/kv/range", {"key": "Lw=="}) is not None)

        admins = []
        for i in range(REPLICAS):
            traffic, admin = free_port(), free_port()
            path = os.path.join(tmp, f"replica-{i}.toml")
            with open(path, "w") as f:
                f.write(
                    f'[server]\nlisten = ["127.0.0.1:{traffic}"]\n'
                    f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
                    '[pools.blue]\nbackends = ["127.0.0.1:9"]\n'
                    '[pools.green]\nbackends = ["127.0.0.1:9"]\n'
                    '[[routes]]\nname = "shop"\nsplit = { blue = 1, green = 1 }\n'
                    f'[fleet]\netcd = ["http://127.0.0.1:{client}"]\nprefix = "/cutover/bench"\n'
                    f'replica = "r{i}"\n')
            log = open(os.path.join(tmp, f"replica-{i}.log"), "w")
            children.append(subprocess.Popen([BINARY, "run", "--config", path],
                                             stdout=log, stderr=subprocess.STDOUT))
            admins.append(admin)
        for admin in admins:
            wait_for(f"replica on admin port {admin} answers", lambda a=admin: effective(a) is not None)

        first, last = [], []
        for n in range(ROUNDS):
            split = {"blue": 100, "green": 0} if n % 2 == 0 else {"blue": 0, "green": 100}
            origin = n % REPLICAS
            others = [a for i, a in enumerate(admins) if i != origin]
            seen = {}

            def watch(admin, started):
                while time.monotonic() - started < DEADLINE:
                    try:
                        if effective(admin) == split:
                            seen[admin] = time.monotonic() - started
                            return
                    except (OSError, urllib.error.URLError, ValueError):
                        pass
                    time.sleep(POLL)

            started = time.monotonic()
            answer = request("PUT", f"http://127.0.0.1:{admins[origin]}/routes/shop/split", split)
            if answer.get("fleet") != "written":
                sys.exit(f"error: round {n}: the override was not written to etcd: {answer}")
            threads = [threading.Thread(target=watch, args=(a, started)) for a in others]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if len(seen) != len(others):
                sys.exit(f"error: round {n}: {len(others) - len(seen)} replicas did not apply the change "
                         f"within {DEADLINE:.0f} s")
            first.append(min(seen.values()))
            last.append(max(seen.values()))

        ms = lambda s: f"{s * 1000:7.1f} ms"
        print(f"{REPLICAS} replicas, {ROUNDS} changes, polling every {POLL * 1000:.0f} ms "
              f"(the time includes the change's own admin call)")
        print(f"{'':28} {'median':>10} {'p90':>10} {'worst':>10}")
        for name, values in [("first other replica has it", first), ("every replica has it", last)]:
            print(f"{name:28} {ms(statistics.median(values)):>10} {ms(percentile(values, 0.9)):>10} "
                  f"{ms(max(values)):>10}")
    finally:
        for child in reversed(children):
            child.terminate()
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
