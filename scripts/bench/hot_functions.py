#!/usr/bin/env python3
"""Writes and checks link/hot-functions.txt: the functions a running agent
executes, which build.rs asks the linker to place together (see its module
doc and docs/benchmarks.md, "Ninth run").

usage:
  hot_functions.py record BIN [--out link/hot-functions.txt] [--seconds 40]
  hot_functions.py check BIN [--list link/hot-functions.txt]

record: runs BIN (a release build) under valgrind's callgrind in three
scenarios, each in a fresh temp dir (kept when a scenario fails), on
127.0.0.1 (free ports; the demo's fixed 7878 and 8765 must be free):
  1. 100 `sleep` services with memory limits, cgroup v1 enforcement, while
     the CLI asks for status, runs, logs, samples and alerts and /metrics,
     the dashboard and the status page are fetched;
  2. the same with the /proc polling watchdog;
  3. the quick start demo (`mamori demo`: an HTTP check, a leaking service
     killed at its limit, a job killed at its wall limit, log capture).
Every function of BIN that ran is listed, as the linker names it: first
those that ran in all three scenarios, then in two, then in one (by name
within each), so that an agent that supervises, but has no checks or jobs,
touches one stretch of code at the start of the list. Callgrind is slow (about 50x), so each scenario runs --seconds s.
Run it under lib/reaper.py; needs valgrind (`apt-get install valgrind`).

check: how many listed functions BIN has, and how the ones it has are laid
out: the span of the code they cover and how many 64 KiB blocks (the
kernel's fault-around unit) it touches. A list from another toolchain or
other dependency versions matches little and should be recorded again.
"""
import argparse, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_LIST = os.path.join(ROOT, 'link', 'hot-functions.txt')


def text_symbols(binary):
    """{name: (address, size)} of BIN's function symbols."""
    out = subprocess.run(['nm', '-S', binary], capture_output=True, text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        p = line.split()
        if len(p) == 4 and p[2] in 'tTwW':
            syms[p[3]] = (int(p[0], 16), int(p[1], 16))
    return syms


def executed(cg_file, binary):
    """Names of BIN's functions that ran, from a callgrind output file
    (written with --demangle=no and name compression)."""
    objs, fns, ran, ob = {}, {}, set(), None
    real = os.path.realpath(binary)
    for line in open(cg_file, errors='replace'):
        m = re.match(r'^(c?ob)=\((\d+)\)(?: (.*))?$', line.rstrip('\n'))
        if m:
            if m.group(3):
                objs[m.group(2)] = m.group(3)
            if m.group(1) == 'ob':
                ob = objs.get(m.group(2))
            continue
        m = re.match(r'^(c?fn)=\((\d+)\)(?: (.*))?$', line.rstrip('\n'))
        if not m:
            continue
        if m.group(3):
            fns[m.group(2)] = m.group(3)
        if m.group(1) == 'fn' and ob and os.path.realpath(ob) == real:
            # callgrind marks recursion levels with 'N
            ran.add(re.sub(r"'\d+$", '', fns[m.group(2)]))
    return ran


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def fleet_config(d, port, enforcement, n=100):
    lines = ['[agent]', f'listen = "127.0.0.1:{port}"', f'data_dir = "{d}/data"',
             f'enforcement = "{enforcement}"', '']
    for i in range(1, n + 1):
        lines += ['[[service]]', f'name = "s{i}"', 'command = ["/bin/sleep", "100000"]',
                  'limits = { memory = "200MiB" }', 'stable_after = "1s"', 'start_limit = 1000', '']
    conf = os.path.join(d, 'mamori.toml')
    with open(conf, 'w') as f:
        f.write('\n'.join(lines))
    return conf


def descendants(pid):
    """Every process below `pid` (the agent is a subreaper: its units'
    orphans stay below it)."""
    kids = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open(f'/proc/{d}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:                     # bounded: each pid is visited once
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.append(k)
                todo.append(k)
    return out


def callgrind(binary, args, cwd, seconds, during=None):
    """Runs BIN ARGS under callgrind for about `seconds`, calling
    during() once half-way, then SIGTERM (the agent stops its units).
    Returns the agent's callgrind file (one per process: `%p`)."""
    with open(os.path.join(cwd, 'valgrind.log'), 'w') as log:
        p = subprocess.Popen(['valgrind', '--tool=callgrind', '--demangle=no',
                              '--callgrind-out-file=' + os.path.join(cwd, 'cg.out.%p'), binary] + args,
                             cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(seconds / 2)
            if during:
                during()
            time.sleep(seconds / 2)
        finally:
            below = descendants(p.pid)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            # Whatever the agent did not stop (it was killed, or failed).
            for k in below + descendants(p.pid):
                try:
                    os.kill(k, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    return os.path.join(cwd, f'cg.out.{p.pid}')


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(('127.0.0.1', port))
            return True
        except OSError:
            return False


def poke(binary, conf, port):
    """What an operator does against a running agent: CLI and HTTP."""
    def run():
        for args in (['status'], ['runs'], ['logs', 's1'], ['samples', 's1'], ['alerts'],
                     ['status', '--json']):
            subprocess.run([binary, '-c', conf] + args, capture_output=True, timeout=60)
        for path in ('/metrics', '/', '/status', '/api/v1/units', '/healthz'):
            try:
                urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=60).read()
            except OSError as e:
                print(f'  {path}: {e}', flush=True)
    return run


# Run natively but not under callgrind, found with `perf record -e
# page-faults -d` on the agent (the first fault in a 64 KiB block of code
# names the function that touched it): the C start-up and tear-down code,
# which callgrind does not name, and the slow paths of locks, which the
# serialised threads under valgrind never contend for.
ALWAYS = re.compile(r'^(_start|frame_dummy|register_tm_clones|deregister_tm_clones|__do_global_dtors_aux)$'
                    r'|(_slow|contended)')


def with_always(listed, syms):
    """`listed` with the ALWAYS functions of BIN it lacks put first."""
    have = set(listed)
    extra = sorted(n for n in syms if n not in have and ALWAYS.search(n)
                   and ('parking_lot' in n or '3std3sys' in n or not n.startswith(('_ZN', '_R'))))
    return extra + listed


# A scenario in which fewer functions ran did not run as meant (the agent
# did not start, the demo's port was taken); its list would lack the
# steady state. Each scenario runs 3,200–3,900 of them.
MIN_RAN = 2000


def scenario(a, name, args, cwd, seconds, during=None):
    print(f'scenario: {name}', flush=True)
    out = callgrind(a.binary, args, cwd, seconds, during)
    got = executed(out, a.binary) if os.path.exists(out) else set()
    print(f'  {len(got)} functions ran', flush=True)
    if len(got) < MIN_RAN:
        raise SystemExit(f'hot_functions: only {len(got)} functions ran in "{name}" (at least {MIN_RAN} '
                         f'expected): see {cwd}/valgrind.log; the list was not written')
    return got


def record(a):
    # The quick start config listens on fixed ports.
    for port in (7878, 8765):
        if not port_free(port):
            raise SystemExit(f'hot_functions: 127.0.0.1:{port} is in use; the demo scenario needs it')
    tmp = tempfile.mkdtemp(prefix='mamori-hot-')
    ran = []
    for enforcement in ('cgroup1', 'poll'):
        d = os.path.join(tmp, enforcement)
        os.mkdir(d)
        port = free_port()
        conf = fleet_config(d, port, enforcement)
        ran.append(scenario(a, f'100 services, {enforcement}', ['-c', conf, 'agent'], d, a.seconds,
                            poke(a.binary, conf, port)))
    d = os.path.join(tmp, 'demo')
    os.mkdir(d)
    conf = os.path.join(d, 'mamori-demo', 'quickstart.toml')

    def demo_calls():
        for args in (['run', 'runaway', '--wait'], ['status'], ['logs', 'leaker'], ['alerts']):
            subprocess.run([a.binary, '-c', conf] + args, capture_output=True, timeout=120)
    ran.append(scenario(a, 'the quick start demo', ['demo'], d, a.seconds * 2, demo_calls))
    shutil.rmtree(tmp, ignore_errors=True)
    syms = text_symbols(a.binary)
    runs = {}
    for got in ran:
        for n in got:
            runs[n] = runs.get(n, 0) + 1
    listed = with_always(sorted((n for n in runs if n in syms), key=lambda n: (-runs[n], n)), syms)
    with open(a.out, 'w') as f:
        f.write(''.join(n + '\n' for n in listed))
    size = sum(syms[n][1] for n in listed)
    print(f'wrote {a.out}: {len(listed)} functions, {size / 2**20:.2f} MiB of code '
          f'({sum(1 for n in runs if n not in syms)} names that ran are not symbols of BIN)')


def check(a):
    listed = [l.strip() for l in open(a.list) if l.strip()]
    syms = text_symbols(a.binary)
    found = [syms[n] for n in listed if n in syms]
    if not found:
        print(f'{a.binary}: none of the {len(listed)} functions in {a.list} (record the list again)')
        return 1
    lo = min(addr for addr, _ in found)
    hi = max(addr + size for addr, size in found)
    blocks = {b for addr, size in found for b in range(addr >> 16, ((addr + max(size, 1) - 1) >> 16) + 1)}
    text = sum(s for _, s in syms.values())
    print(f'{a.binary}: {len(found)} of {len(listed)} listed functions '
          f'({sum(s for _, s in found) / 2**20:.2f} MiB of {text / 2**20:.2f} MiB of code); '
          f'they span {(hi - lo) / 2**20:.2f} MiB, {len(blocks)} blocks of 64 KiB')
    if len(found) < 0.8 * len(listed):
        print('warning: less than 80 % of the list matches this binary: record it again '
              '(scripts/bench/hot_functions.py record BIN)')
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('record')
    r.add_argument('binary')
    r.add_argument('--out', default=DEFAULT_LIST)
    r.add_argument('--seconds', type=float, default=40)
    c = sub.add_parser('check')
    c.add_argument('binary')
    c.add_argument('--list', default=DEFAULT_LIST)
    a = ap.parse_args()
    # The scenarios run in their own directories (a bare name is left to PATH).
    if os.sep in a.binary:
        a.binary = os.path.abspath(a.binary)
    if a.cmd == 'record':
        record(a)
        return 0
    return check(a)


if __name__ == '__main__':
    sys.exit(main())
