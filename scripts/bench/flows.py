#!/usr/bin/env python3
"""Flow engine overhead and schedule jitter.

1. A flow of N jobs (`/bin/true`) as a wide DAG (one root, N-2 jobs after it,
   one job after all of those) and as a deep one (a chain of N): total time and
   time per job, against a shell loop that runs /bin/true N times (the cost of
   the processes themselves).
2. A job with `every = "1s"` that records when it really started: how late
   after the scheduled second (median, p99), against a bash loop that sleeps
   to the next whole second and then runs the same command.

    python3 scripts/bench/flows.py [--n 10000] [--fires 30]
Every process started is stopped on all paths; all traffic is to 127.0.0.1.
"""
import argparse, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, method, path, token=None, timeout=60):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, max(0, round(p / 100 * (len(v) - 1))))]


class Agent:
    def __init__(self, binary, units, work):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mamori-bench-flows-", dir=work)
        with open(f"{self.dir}/mamori.toml", "w") as f:
            f.write(f'[agent]\nlisten = "127.0.0.1:{self.port}"\ndata_dir = "data"\n\n{units}')
        self.proc = subprocess.Popen([binary, "-c", f"{self.dir}/mamori.toml", "agent"],
                                     stdout=open(f"{self.dir}/agent.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while True:
            try:
                call(self.port, "GET", "/healthz", timeout=2)
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"agent did not start; see {self.dir}/agent.log")
                time.sleep(0.2)
        self.token = open(f"{self.dir}/data/token").read().strip()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def flow_units(shape, n):
    out = []
    for i in range(n):
        if shape == "wide":
            after = [] if i == 0 else (["j0"] if i < n - 1 else [f"j{k}" for k in range(1, n - 1)])
        else:
            after = [] if i == 0 else [f"j{i - 1}"]
        out.append(f'[[job]]\nname = "j{i}"\ncommand = ["/bin/true"]\nafter = {json.dumps(after)}\n')
    return "\n".join(out)


def run_flow(binary, shape, n, work):
    a = Agent(binary, flow_units(shape, n), work)
    try:
        t0 = time.time()
        call(a.port, "POST", "/api/v1/flows/j0/run", a.token)
        while True:
            time.sleep(0.5)
            flows = call(a.port, "GET", "/api/v1/flows")
            latest = flows[0]["latest"]
            if latest and latest["status"] != "running":
                break
            if time.time() - t0 > 3600:
                raise SystemExit("flow did not finish within an hour")
        took = time.time() - t0
        return took, latest["status"]
    finally:
        a.stop()


def shell_baseline(n):
    t0 = time.time()
    subprocess.run(["bash", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)
    return time.time() - t0


def jitter_mamori(binary, fires, work):
    out = f"{work}/fires-mamori.txt"
    a = Agent(binary, f'[[job]]\nname = "tick"\nevery = "1s"\ncommand = ["/bin/sh", "-c", "date +%s.%N >> {out}"]\n', work)
    try:
        deadline = time.time() + fires + 30
        while time.time() < deadline:
            time.sleep(1)
            if os.path.exists(out) and len(open(out).read().split()) >= fires + 2:
                break
    finally:
        a.stop()
    stamps = [float(x) for x in open(out).read().split()][2:fires + 2]  # skip warm-up
    return [(t - int(t)) * 1000 for t in stamps]


def jitter_bash(fires, work):
    out = f"{work}/fires-bash.txt"
    script = (f'for i in $(seq {fires}); do now=$(date +%s.%N); '
              f'sleep $(echo "1 - ($now - ${{now%.*}})" | bc -l); /bin/sh -c "date +%s.%N >> {out}"; done')
    subprocess.run(["bash", "-c", script], check=True, timeout=fires * 3 + 30)
    stamps = [float(x) for x in open(out).read().split()]
    return [(t - int(t)) * 1000 for t in stamps]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--fires", type=int, default=30)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/mamori"))
    ap.add_argument("--only", default="wide,deep,jitter")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="mamori-bench-flows-")
    try:
        base = shell_baseline(args.n)
        print(f"mamori {args.bin}; N = {args.n}")
        print(f"\nbaseline: bash loop running /bin/true {args.n} times: {base:.2f} s ({base / args.n * 1000:.3f} ms per process)\n")
        print("| flow shape | jobs | total s | ms per job | overhead per job vs the bash loop, ms | result |")
        print("|---|---|---|---|---|---|")
        for shape in [s for s in ("wide", "deep") if s in args.only]:
            took, status = run_flow(args.bin, shape, args.n, work)
            print(f"| {shape} | {args.n} | {took:.1f} | {took / args.n * 1000:.2f} | {(took - base) / args.n * 1000:.2f} | {status} |", flush=True)
        if "jitter" in args.only:
            if shutil.which("bc") is None:
                subprocess.run(["apt-get", "install", "-y", "-qq", "bc"], check=False)
            m = jitter_mamori(args.bin, args.fires, work)
            b = jitter_bash(args.fires, work)
            print(f"\nschedule jitter: start of the command after the scheduled second, {args.fires} fires each")
            print("| scheduler | median ms | p99 ms | max ms |")
            print("|---|---|---|---|")
            print(f"| mamori every = \"1s\" | {statistics.median(m):.1f} | {pct(m, 99):.1f} | {max(m):.1f} |")
            print(f"| bash loop (sleep to the next second) | {statistics.median(b):.1f} | {pct(b, 99):.1f} | {max(b):.1f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
