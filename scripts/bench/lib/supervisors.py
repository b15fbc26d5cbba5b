"""Start/stop drivers for mamori, supervisord, monit and pm2 supervising N
`/bin/sleep 100000` children (adapted from shared/anchors/lib/supervisors.py;
the peer drivers are unchanged apart from the runtime directory).

Runtime state lives in $BENCH_RUN (default /tmp/mamori-bench-run)/<tag>/ .
Every process is stopped by its PID (pm2 through `pm2 kill`, which acts on
one PM2_HOME's own pidfile). Each stop() returns the children it had to kill
itself (an empty list is the normal case).
"""
import json, os, shutil, signal, socket, subprocess, time
import proc

RUN = os.environ.get('BENCH_RUN', '/tmp/mamori-bench-run')
SLEEP = '/bin/sleep'
MAMORI = os.environ.get('MAMORI', '/tmp/mamori-bench-bin/mamori')


def _fresh(tag):
    d = os.path.join(RUN, tag)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    return d


def _kill_pids(pids, sig=signal.SIGTERM):
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _toml_str(s):
    return json.dumps(s)  # a JSON string is a valid TOML basic string


def memory_cgroup_dir():
    """Our own cgroup-v1 memory directory (the agent inherits it)."""
    try:
        with open('/proc/self/cgroup') as f:
            for line in f:
                _, ctrl, path = line.rstrip('\n').split(':', 2)
                if 'memory' in ctrl.split(','):
                    return '/sys/fs/cgroup/memory' + path
    except OSError:
        pass
    return None


class Mamori:
    """mamori agent with N `sleep` services (or the given `services`).

    services: list of (name, argv) tuples; default N sleeps s1..sN.
    Every service gets limits = { memory = MEMORY }, stable_after = "1s"
    and start_limit = 1000 (so each kill is restarted at once and the
    crash-loop guard never trips).
    """

    def __init__(self, n=100, tag='mamori', enforcement='cgroup1', poll_interval='250ms',
                 memory='200MiB', services=None):
        self.n = n
        self.name = f'mamori-{enforcement}'
        self.enforcement = enforcement
        self.dir = _fresh(tag)
        self.conf = os.path.join(self.dir, 'mamori.toml')
        self.log = os.path.join(self.dir, 'agent.log')
        self.port = free_port()
        if services is None:
            services = [(f's{i}', [SLEEP, '100000']) for i in range(1, n + 1)]
        self.n = len(services)
        lines = ['[agent]', f'listen = "127.0.0.1:{self.port}"',
                 f'data_dir = {_toml_str(self.dir + "/data")}',
                 f'enforcement = "{enforcement}"', f'poll_interval = "{poll_interval}"', '']
        for name, argv in services:
            lines += ['[[service]]', f'name = "{name}"',
                      'command = [' + ', '.join(_toml_str(a) for a in argv) + ']',
                      f'limits = {{ memory = "{memory}" }}' if memory else '',
                      'stable_after = "1s"', 'start_limit = 1000', '']
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines))
        cg = memory_cgroup_dir()
        self.cg_base = cg
        self.cg_before = set(self._cg_roots())

    def _cg_roots(self):
        if not self.cg_base or not os.path.isdir(self.cg_base):
            return []
        return [d for d in os.listdir(self.cg_base) if d.startswith('mamori-')]

    def start(self):
        self.logf = open(self.log, 'w')
        self.p = subprocess.Popen([MAMORI, '-c', self.conf, 'agent'],
                                  stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        ok = proc.wait_for(lambda: len(proc.sleep_children(self.pid)) >= self.n, 120, 0.2)
        if not ok:
            self.stop()
            raise RuntimeError('mamori children did not come up (see %s)' % self.log)
        return self.pid

    def start_only(self):
        """Start the agent without waiting for sleep children (M3)."""
        self.logf = open(self.log, 'w')
        self.p = subprocess.Popen([MAMORI, '-c', self.conf, 'agent'],
                                  stdout=self.logf, stderr=subprocess.STDOUT)
        self.pid = self.p.pid
        return self.pid

    def children(self):
        return proc.sleep_children(self.pid)

    def status_json(self):
        r = subprocess.run([MAMORI, '-c', self.conf, 'status', '--json'],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def stop(self):
        kids = proc.children(self.pid) if proc.alive(self.pid) else []
        try:
            os.kill(self.pid, signal.SIGTERM)  # stops every unit, then exits
        except ProcessLookupError:
            pass
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait(10)
        self.logf.close()
        time.sleep(0.3)
        left = [k for k in kids if proc.alive(k)]
        _kill_pids(left, signal.SIGKILL)
        # The agent removes each run's cgroup; its own mamori-<id> root stays
        # (empty). Remove the roots this instance created, if empty.
        for d in set(self._cg_roots()) - self.cg_before:
            try:
                os.rmdir(os.path.join(self.cg_base, d))
            except OSError as e:
                print(f'warning: could not remove cgroup {d}: {e}', flush=True)
        return left


class Supervisord:
    name = 'supervisord'

    def __init__(self, n=100, tag='sup'):
        self.n = n
        self.dir = _fresh(tag)
        self.conf = os.path.join(self.dir, 'supervisord.conf')
        os.makedirs(os.path.join(self.dir, 'childlogs'))
        lines = [
            '[unix_http_server]', f'file={self.dir}/supervisor.sock', '',
            '[supervisord]', f'logfile={self.dir}/supervisord.log',
            f'pidfile={self.dir}/supervisord.pid', f'childlogdir={self.dir}/childlogs',
            'nodaemon=true', '',
            '[rpcinterface:supervisor]',
            'supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface', '',
            '[supervisorctl]', f'serverurl=unix://{self.dir}/supervisor.sock', '',
        ]
        for i in range(1, n + 1):
            lines += [f'[program:s{i}]', f'command={SLEEP} 100000',
                      'autorestart=true', 'startsecs=0', '']
        with open(self.conf, 'w') as f:
            f.write('\n'.join(lines))

    def start(self):
        self.p = subprocess.Popen(['supervisord', '-n', '-c', self.conf],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.p.pid
        ok = proc.wait_for(lambda: len(proc.sleep_children(self.pid)) >= self.n, 120, 0.5)
        if not ok:
            self.stop()
            raise RuntimeError('supervisord children did not come up')
        return self.pid

    def children(self):
        return proc.sleep_children(self.pid)

    def stop(self):
        kids = self.children()
        os.kill(self.pid, signal.SIGTERM)  # supervisord stops its children, then exits
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait(10)
        time.sleep(0.5)
        left = [k for k in kids if proc.alive(k)]
        _kill_pids(left)
        return left


class Monit:
    name = 'monit'

    def __init__(self, n=100, tag='monit', interval=1):
        self.n = n
        self.dir = _fresh(tag)
        self.rc = os.path.join(self.dir, 'monitrc')
        lines = [f'set daemon {interval}', f'set logfile {self.dir}/monit.log',
                 f'set pidfile {self.dir}/monit.pid', f'set idfile {self.dir}/monit.id',
                 f'set statefile {self.dir}/monit.state',
                 f'set httpd unixsocket {self.dir}/monit.sock', '    allow admin:monit', '']
        for i in range(1, n + 1):
            pf = f'{self.dir}/s{i}.pid'
            lines += [f'check process s{i} with pidfile {pf}',
                      f'  start program = "/bin/sh -c \'{SLEEP} 100000 >/dev/null 2>&1 & echo $! > {pf}\'"',
                      f'  stop program = "/bin/sh -c \'kill $(cat {pf})\'"',
                      '  if totalmem > 200 MB then restart', '']
        with open(self.rc, 'w') as f:
            f.write('\n'.join(lines))
        os.chmod(self.rc, 0o600)

    def _pf_pids(self):
        out = []
        for i in range(1, self.n + 1):
            try:
                with open(f'{self.dir}/s{i}.pid') as f:
                    p = int(f.read().strip())
                if proc.alive(p):
                    out.append(p)
            except (OSError, ValueError):
                pass
        return out

    def start(self):
        self.p = subprocess.Popen(['monit', '-c', self.rc, '-I'],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.p.pid
        ok = proc.wait_for(lambda: len(self._pf_pids()) >= self.n, 300, 0.5)
        if not ok:
            self.stop()
            raise RuntimeError('monit children did not come up')
        return self.pid

    def children(self):
        return self._pf_pids()

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)  # monit quits, leaves services running
        except ProcessLookupError:
            pass
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.p.wait(10)
        kids = self._pf_pids()
        _kill_pids(kids)
        time.sleep(0.5)
        return [k for k in kids if proc.alive(k)]


class PM2:
    name = 'pm2'

    def __init__(self, n=100, tag='pm2'):
        self.n = n
        self.dir = _fresh(tag)
        self.env = dict(os.environ, PM2_HOME=os.path.join(self.dir, 'home'))
        apps = [{'name': f's{i}', 'script': SLEEP, 'args': '100000',
                 'interpreter': 'none', 'autorestart': True} for i in range(1, n + 1)]
        self.eco = os.path.join(self.dir, 'ecosystem.config.js')
        with open(self.eco, 'w') as f:
            f.write('module.exports = ' + json.dumps({'apps': apps}, indent=1) + ';\n')
        self.pid = None

    def god_pid(self):
        with open(os.path.join(self.dir, 'home', 'pm2.pid')) as f:
            return int(f.read().strip())

    def start(self):
        try:
            subprocess.run(['pm2', 'start', self.eco], env=self.env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
            self.pid = self.god_pid()
            ok = proc.wait_for(lambda: len(proc.sleep_children(self.pid)) >= self.n, 120, 0.5)
        except Exception:
            self.stop()
            raise
        if not ok:
            self.stop()
            raise RuntimeError('pm2 children did not come up')
        return self.pid

    def children(self):
        return proc.sleep_children(self.pid) if self.pid else []

    def stop(self):
        kids = self.children()
        subprocess.run(['pm2', 'kill'], env=self.env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=120)
        if self.pid:
            proc.wait_for(lambda: not proc.alive(self.pid), 30, 0.2)
            if proc.alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
        time.sleep(0.5)
        left = [k for k in kids if proc.alive(k)]
        _kill_pids(left)
        return left


def _mamori(enforcement, poll_interval='250ms'):
    def make(n=100, tag='mamori'):
        m = Mamori(n=n, tag=tag, enforcement=enforcement, poll_interval=poll_interval)
        return m
    return make


def _named(factory, name):
    def make(**kw):
        o = factory(**kw)
        o.name = name
        return o
    return make


KINDS = {
    'mamori-cgroup1': _named(_mamori('cgroup1'), 'mamori-cgroup1'),
    'mamori-poll': _named(_mamori('poll'), 'mamori-poll'),
    # diagnostic: the same, sampling once a second like monit's `set daemon 1`
    'mamori-cgroup1-1s': _named(_mamori('cgroup1', '1s'), 'mamori-cgroup1-1s'),
    'mamori-poll-1s': _named(_mamori('poll', '1s'), 'mamori-poll-1s'),
    'supervisord': Supervisord,
    'monit': Monit,
    'pm2': PM2,
}


def install_sigterm_exit():
    """Turn SIGTERM into SystemExit so every `finally` runs (stop by PID)."""
    def h(sig, _f):
        raise SystemExit(128 + sig)
    signal.signal(signal.SIGTERM, h)
