#!/usr/bin/env python3
"""Turn RESULTS/*.json into markdown tables (stdout): mamori and each peer from
the same run, then ratios mamori/peer and the targets of issue 2.

usage: summarize.py [RESULTS_DIR]   (default: scripts/bench/results)
"""
import json, os, sys
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'lib'))
from proc import pctl
R = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, 'results')

MAMORI = ('mamori-cgroup1', 'mamori-poll', 'mamori-cgroup1-1s', 'mamori-poll-1s')
PEERS = ('supervisord', 'monit', 'pm2')
LABEL = {
    'mamori-cgroup1': 'mamori, enforcement cgroup1 (poll_interval 250ms)',
    'mamori-poll': 'mamori, enforcement poll (poll_interval 250ms)',
    'mamori-cgroup1-1s': 'mamori, cgroup1, poll_interval 1s (extra)',
    'mamori-poll-1s': 'mamori, poll, poll_interval 1s (extra)',
}
# Anchor figures (shared/anchors/RESULTS.md) the targets are stated against.
TARGET_RSS_MIB = 7.9          # monit's RSS
TARGET_CPU_S = 0.43 / 2       # half of monit's CPU-s / 60 s
TARGET_RESTART_MS = 5.0
TARGET_OVERSHOOT_POLL_MIB = 2.5


def load(n):
    """A results file with the trials discarded for a busy machine left out
    (their count kept in 'discarded')."""
    p = os.path.join(R, n)
    if not os.path.exists(p):
        return None
    d = json.load(open(p))
    if isinstance(d, list):
        kept = [x for x in d if not x.get('discarded_busy')]
        return kept if kept else None
    if 'trials' in d:
        d['discarded'] = sum(1 for x in d['trials'] if x.get('discarded_busy'))
        d['trials'] = [x for x in d['trials'] if not x.get('discarded_busy')]
    return d


def med(v):
    v = [x for x in v if x is not None]
    return pctl(v, .5) if v else None


def mmm(v, fmt='{:.1f}'):
    v = [x for x in v if x is not None]
    if not v:
        return 'n/a'
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(pctl(v, .5))} ({fmt.format(min(v))}–{fmt.format(max(v))})"


def ratio(a, b, fmt='{:.2f}'):
    if a is None or b in (None, 0):
        return 'n/a'
    return fmt.format(a / b) + '×'


out = []
P = out.append

# ---------------------------------------------------------------- M1
m1 = {k: load(f'm1_{k}.json') for k in MAMORI + PEERS}
m1 = {k: v for k, v in m1.items() if v}
P('### M1 footprint (100 × `/bin/sleep 100000`, 10 s settle, 60 s window)\n')
P('| supervisor | trials | VmRSS MiB at end | max VmRSS in window, MiB | of which anon / file-backed MiB | PSS MiB at end | CPU s / 60 s | CPU % of one core | threads | time to 100 up, s | whole machine busy in window |')
P('|---|---|---|---|---|---|---|---|---|---|---|')
for k, d in m1.items():
    norm = [x['cpu_s'] * 60 / x['window_s'] for x in d]
    P(f"| {LABEL.get(k, k)} | {len(d)} | {mmm([x['rss_kb_end']/1024 for x in d])} | {mmm([x['rss_kb_max_window']/1024 for x in d])} | "
      f"{mmm([x.get('rss_anon_kb_end', 0)/1024 for x in d])} / {mmm([x.get('rss_file_kb_end', 0)/1024 for x in d])} | "
      f"{mmm([x['pss_kb_end']/1024 if x.get('pss_kb_end') else None for x in d])} | "
      f"{mmm(norm, '{:.2f}')} | {mmm([x['cpu_pct'] for x in d], '{:.2f}')} | {d[0]['threads']} | {mmm([x['startup_s'] for x in d])} | {mmm([100 * x.get('machine_busy_frac', 0) for x in d], '{:.0f}')} % |")
P('PSS counts each page shared with other processes (libc, and the interpreter of supervisord and pm2) as 1/N for the N processes that map it; VmRSS, the issue\'s measure, counts it whole.\n')
peers = [p for p in PEERS if p in m1]
if peers:
    P('Ratios mamori / peer (medians; < 1 means mamori uses less):\n')
    P('| mamori mode | ' + ' | '.join(f'RSS vs {p}' for p in peers) + ' | ' + ' | '.join(f'CPU vs {p}' for p in peers) + ' |')
    P('|---|' + '---|' * (2 * len(peers)))
    for k in [k for k in MAMORI if k in m1]:
        rs = med([x['rss_kb_end'] for x in m1[k]]); cs = med([x['cpu_s'] for x in m1[k]])
        P(f'| {k} | ' + ' | '.join(ratio(rs, med([x['rss_kb_end'] for x in m1[p]])) for p in peers) + ' | '
          + ' | '.join(ratio(cs, med([x['cpu_s'] for x in m1[p]])) for p in peers) + ' |')
    P('')

# ---------------------------------------------------------------- M2
m2 = {k: load(f'm2_{k}.json') for k in MAMORI + PEERS}
m2 = {k: v for k, v in m2.items() if v}
P('### M2 crash-restart latency (SIGKILL one of 100 children → new child; 1 ms /proc poll)\n')
P('"forked" = a new PID whose parent is the supervisor exists (the anchors\' measure); "exec\'d" = that child (monit: the `sh -c` start program\'s child) already runs `sleep`.\n')
P('| supervisor | n (discarded: machine busy) | forked: median ms | forked: p95 ms | forked: min–max ms | exec\'d: median ms | exec\'d: p95 ms | exec\'d: min–max ms | machine busy, kept trials |')
P('|---|---|---|---|---|---|---|---|---|')
for k, d in m2.items():
    s = d['summary']; t = d['trials']
    ex = [x['exec_ms'] for x in t if x.get('exec_ms') is not None]
    if 'median_ms' not in s:
        P(f"| {LABEL.get(k, k)} | 0 (missed {s['missed']}) | | | | | | | |"); continue
    P(f"| {LABEL.get(k, k)} | {s['n']} ({d.get('discarded', 0)}) | {s['median_ms']:.1f} | {s['p95_ms']:.1f} | {s['min_ms']:.1f}–{s['max_ms']:.1f} | "
      f"{pctl(ex, .5):.1f} | {pctl(ex, .95):.1f} | {min(ex):.1f}–{max(ex):.1f} | {mmm([100 * x.get('machine_busy_frac', 0) for x in t], '{:.0f}')} % |")
P('')
peers = [p for p in PEERS if p in m2]
if peers:
    P('Ratios mamori / peer (median, forked):\n')
    P('| mamori mode | ' + ' | '.join(f'vs {p}' for p in peers) + ' |')
    P('|---|' + '---|' * len(peers))
    for k in [k for k in MAMORI if k in m2]:
        P(f'| {k} | ' + ' | '.join(ratio(m2[k]['summary'].get('median_ms'), m2[p]['summary'].get('median_ms'), '{:.3f}') for p in peers) + ' |')
    P('')

# ---------------------------------------------------------------- M3
P('### M3 memory-limit reaction (child grows 10 MiB/s; limit 200 MiB; 10 ms poller of /proc/PID/status)\n')
P('Overshoot = peak seen by the poller minus 200 MiB (negative: it was stopped below). '
  'VmRSS includes file-backed pages (the Python interpreter and libraries, ~5.7 MiB) that a cgroup does not charge to the hog; RssAnon is the hog\'s own memory. '
  'Delay = first poll at ≥ 200 MiB VmRSS → process gone.\n')
P('| supervisor / setting | trials killed | VmRSS peak MiB | VmRSS overshoot MiB | RssAnon peak MiB | RssAnon overshoot MiB | delay cross→gone s | machine busy | what the supervisor recorded |')
P('|---|---|---|---|---|---|---|---|---|')
M3 = (('mamori-cgroup1', 'mamori, enforcement cgroup1 (kernel memory.limit_in_bytes)'),
      ('mamori-poll', 'mamori, enforcement poll, poll_interval 250ms'),
      ('monit', 'monit, set daemon 1, totalmem > 200 MB'),
      ('pm2', 'pm2 --max-memory-restart 200M (default worker interval 30 s)'),
      ('pm2-wi1000', 'pm2 --max-memory-restart 200M, PM2_WORKER_INTERVAL=1000 (non-default)'))
m3 = {}
for k, lab in M3:
    d = load(f'm3_{k}.json')
    if not d:
        continue
    m3[k] = d
    t = [x for x in d['trials'] if x['killed']]
    rec = ''
    if k.startswith('mamori'):
        reasons = [r for r in d.get('ended_reasons', []) if r != 'shutdown']
        vals = [x.get('mamori_value_mib') for x in t]
        rec = (f"{sum(1 for r in reasons if r == 'limit:memory')} of {len(reasons)} hog runs ended `limit:memory`; "
               f"value logged {mmm(vals, '{:.2f}')} MiB")
    P(f"| {lab} | {len(t)}/{len(d['trials'])}{' (+%d discarded: busy)' % d['discarded'] if d.get('discarded') else ''} | {mmm([x['peak_rss_kb']/1024 for x in t])} | {mmm([x['peak_over_limit_mb'] for x in t])} | "
      f"{mmm([x.get('peak_rss_anon_kb', 0)/1024 for x in t])} | {mmm([x.get('anon_over_limit_mb') for x in t])} | "
      f"{mmm([x['delay_cross_to_death_s'] for x in t], '{:.2f}')} | {mmm([100 * x.get('machine_busy_frac', 0) for x in t], '{:.0f}')} % | {rec} |")
P('')
if m3:
    pre = {d.get('prefill_mib') for d in m3.values()}
    P(f'(hog prefill: {", ".join(str(p) for p in pre)} MiB at once, then 10 MiB/s.)\n')

# ---------------------------------------------------------------- targets
P('### Targets (issue 2; anchor figures from shared/anchors/RESULTS.md)\n')
P('| target | mamori mode | measured (median) | met? |')
P('|---|---|---|---|')
for k in ('mamori-cgroup1', 'mamori-poll'):
    if k in m1:
        rs = med([x['rss_kb_end'] / 1024 for x in m1[k]])
        cs = med([x['cpu_s'] * 60 / x['window_s'] for x in m1[k]])
        P(f"| RSS ≤ monit's 7.9 MiB | {k} | {rs:.1f} MiB ({rs/TARGET_RSS_MIB:.2f}× the target) | {'yes' if rs <= TARGET_RSS_MIB else 'no'} |")
        P(f"| CPU ≤ half of monit's 0.43 s/60 s = 0.215 | {k} | {cs:.2f} s ({cs/TARGET_CPU_S:.1f}× the target) | {'yes' if cs <= TARGET_CPU_S else 'no'} |")
for k in ('mamori-cgroup1', 'mamori-poll'):
    if k in m2 and 'median_ms' in m2[k]['summary']:
        s = m2[k]['summary']
        ex = med([x['exec_ms'] for x in m2[k]['trials'] if x.get('exec_ms') is not None])
        P(f"| restart median < 5 ms | {k} | forked {s['median_ms']:.1f} ms, exec'd {ex:.1f} ms | "
          f"forked: {'yes' if s['median_ms'] < TARGET_RESTART_MS else 'no'}; exec'd: {'yes' if ex < TARGET_RESTART_MS else 'no'} |")
if 'mamori-poll' in m3:
    t = [x for x in m3['mamori-poll']['trials'] if x['killed']]
    o = med([x['peak_over_limit_mb'] for x in t]); mx = max(x['peak_over_limit_mb'] for x in t)
    P(f"| overshoot < 2.5 MiB with polling | mamori-poll | {o:.1f} MiB median, {mx:.1f} max (VmRSS) | "
      f"{'yes' if mx < TARGET_OVERSHOOT_POLL_MIB else ('median yes, max no' if o < TARGET_OVERSHOOT_POLL_MIB else 'no')} |")
if 'mamori-cgroup1' in m3:
    t = [x for x in m3['mamori-cgroup1']['trials'] if x['killed']]
    o = med([x['peak_over_limit_mb'] for x in t]); oa = max(x.get('anon_over_limit_mb', 0) for x in t)
    P(f"| no overshoot with cgroups | mamori-cgroup1 | RssAnon max {oa:+.1f} MiB vs limit; VmRSS {o:+.1f} MiB (file-backed pages, not charged) | "
      f"{'yes (charged memory never passed the limit)' if oa <= 0 else 'no'} |")
P('')
print('\n'.join(out))
