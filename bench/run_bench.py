"""``make bench``: our server side by side with two baselines, on the same workloads, in one
invocation, so every ratio compares numbers from the same machine and the same minutes.

- ours: chatroom_server (flood control off, as load tests need)
- naive: bench/naive_server.py, protocol v1 as a first attempt writes it
- raw: bench/raw_relay.py, lines forwarded unparsed: the practical ceiling here
- ours-nolog: ours with ``--history off``, for the cost of the message log (fan-out N=100
  and DM pairs only)

Workloads (chat-load's Swarm: bots log in once, then the rate steps up):
  fan-out N=10/100/500 (10 senders, PMs) stepping the rate to the highest with p99 < 50 ms
  and nothing lost; DM pairs; a login storm of 500; one client that stops reading while
  the others keep their p99; holding 2,000 and 10,000 idle clients (each on a fresh
  server, ours with cheap load-test hashes); churn (ours): 200 bots, 20 receivers a
  second cut and resumed while 500 msg/s flow, nothing lost or duplicated.

    .venv/bin/python bench/run_bench.py [--quick] [--hold 2000,10000] [--only hold]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import cpu_seconds, rss_kib, start_server, thread_count

from chatroom_bots.load import LoadConfig, LoadResult, Swarm

P99_LIMIT_MS = 50.0
STEP_SECONDS = 2.0


def sustainable(r: LoadResult) -> bool:
    """Nothing lost or errored, p99 under 50 ms, and the generator kept its schedule (at
    most 1 % of sends over 10 ms late: lateness is inside the latency, measured from the
    intended time; this only rejects steps the generator itself could not drive)."""
    return (
        r.lost == 0
        and r.errors == 0
        and r.latency_ms["p99"] < P99_LIMIT_MS
        and r.late_sends <= 0.01 * max(1, r.sent)
    )


def step_up(
    swarm: Swarm,
    start: float,
    factor: float,
    cap: float,
    refine: int = 2,
    seconds: float = STEP_SECONDS,
) -> dict[str, Any]:
    """Raise the rate until a step is not sustainable, then bisect (geometrically, ``refine``
    times) between the last good and the first bad rate, so two servers a factor apart
    are not both rounded to the same step. Return the best step and all steps."""
    rate, best, steps = start, None, []
    good, bad = 0.0, 0.0
    while rate <= cap:
        r = swarm.step(rate, seconds)
        row = {
            "rate": rate,
            "deliveries_per_s": r.delivered / seconds,
            "p99_ms": r.latency_ms["p99"],
            "lost": r.lost,
            "errors": r.errors,
            "late_sends": r.late_sends,
            "ok": sustainable(r),
        }
        steps.append(row)
        print(
            f"    rate {rate:>8.0f}/s  deliveries {row['deliveries_per_s']:>9.0f}/s  "
            f"p99 {row['p99_ms']:>8.2f} ms  lost {r.lost}  late {r.late_sends}"
            f"{'' if row['ok'] else '  <- not sustainable'}",
            flush=True,
        )
        if row["ok"]:
            best, good = row, rate
        else:
            bad = rate
        if bad and (not good or refine == 0):
            break
        if bad:
            refine -= 1
            rate = (good * bad) ** 0.5
        else:
            rate *= factor
    return {"best": best, "steps": steps}


def fanout(kind: str, port: int, pid: int, n: int, start: float, quick: bool) -> dict[str, Any]:
    cfg = LoadConfig(
        port=port,
        clients=n,
        senders=min(10, n),
        pm_fraction=1.0,
        size=80,
        processes=2,
        drain=1.0,
        relay_frames=True,
    )
    with Swarm(cfg) as swarm:
        found = step_up(swarm, start, 1.6 if not quick else 2.5, cap=1e6)
        cpu0 = cpu_seconds(pid)
        fixed = swarm.step(start, STEP_SECONDS)  # the common low rate, for p99 ratios
        cpu = cpu_seconds(pid) - cpu0
        out = {
            "max": found["best"],
            "steps": found["steps"],
            "fixed_rate": start,
            "fixed_p99_ms": fixed.latency_ms["p99"],
            # Server CPU per 1,000 deliveries at that rate: its efficiency, whoever limits
            # the maximum (on this box, the generator).
            "fixed_cpu_ms_per_1k": 1e6 * cpu / max(1, fixed.delivered),
        }
        if kind == "ours" and found["best"]:
            half = found["best"]["rate"] / 2
            r = swarm.step(half, STEP_SECONDS)
            out["half_rate"] = half
            out["half_p99_ms"] = r.latency_ms["p99"]
    return out


def dm_pairs(port: int, quick: bool) -> dict[str, Any]:
    cfg = LoadConfig(port=port, clients=100, senders=100, pm_fraction=0.0, processes=2, drain=1.0)
    with Swarm(cfg) as swarm:
        return step_up(swarm, 500, 1.6 if not quick else 2.5, cap=1e6)


def logins(port: int, n: int) -> dict[str, Any]:
    cfg = LoadConfig(
        port=port, mode="logins", clients=n, processes=2, login_concurrency=64, seed=99
    )
    with Swarm(cfg) as swarm:
        r = swarm.login
    return {
        "clients": r.logged_in,
        "seconds": r.login_seconds,
        "per_s": r.logged_in / max(r.login_seconds, 1e-9),
        "ms": r.login_ms,
        "failures": len(r.login_failures),
    }


# Extra server options for the hold workloads: cheap hashes (10,000 OWASP hashes would
# take 4 minutes of argon2, which the login storm of 500 already measures) and the
# default periodic user-list push, as a real server would run.
HOLD_ARGS = {"ours": ("--password-hash", "load-test", "--users-interval", "30"), "naive": ()}


def hold(port: int, pid: int, n: int) -> dict[str, Any]:
    before = rss_kib(pid)
    cfg = LoadConfig(
        port=port,
        clients=n,
        senders=1,
        pm_fraction=1.0,
        processes=2,
        drain=2.0,
        seed=7,
        login_concurrency=64,
        login_timeout=30 + n / 100,  # the naive server never finishes 10,000: give up
    )
    with Swarm(cfg) as swarm:
        held_rss, threads = rss_kib(pid), thread_count(pid)
        # Hold 5 s, then a small probe: 1 PM/s, each delivered to all n - 1 others.
        probe = swarm.step(1.0, 3.0, delay=5.0)
        after = swarm.login.logged_in - probe.disconnects
    return {
        "clients": swarm.login.logged_in,
        "failures": len(swarm.login.login_failures),
        "still_connected": after,
        "disconnects": probe.disconnects,
        "probe_lost": probe.lost,
        "probe_p99_ms": probe.latency_ms["p99"],
        "rss_kib": held_rss,
        "threads": threads,
        "rss_per_conn_kib": (held_rss - before) / max(1, swarm.login.logged_in),
        "login_seconds": swarm.login.login_seconds,
        "logins_per_s": swarm.login.logged_in / max(1e-9, swarm.login.login_seconds),
    }


def slow_reader(port: int, rate: float) -> dict[str, Any]:
    """p99 of 100 bots at a fixed rate, without and then with one client that never reads."""
    cfg = LoadConfig(port=port, clients=100, senders=10, processes=2, drain=1.0, seed=5)
    with Swarm(cfg) as swarm:
        base = swarm.step(rate, 3.0)
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(
            b'{"command":"login","username":"stuck_reader","password":"stuck reader password"}\n'
        )
        with_stuck = swarm.step(rate, 3.0)
        stuck.close()
    return {
        "rate": rate,
        "p99_ms_without": base.latency_ms["p99"],
        "p99_ms_with": with_stuck.latency_ms["p99"],
        "lost_with": with_stuck.lost,
        "late_with": with_stuck.late_sends,
    }


def churn(port: int) -> dict[str, Any]:
    """200 bots, 10 senders at 500 msg/s for 10 s, 20 receivers a second cut abruptly and
    resumed with since: loss and duplicates over everything each bot should receive."""
    cfg = LoadConfig(
        port=port, clients=200, senders=10, pm_fraction=0.9, processes=2, drain=2.0, churn=20.0
    )
    with Swarm(cfg) as swarm:
        r = swarm.step(500.0, 10.0)
    return {
        "expected": r.expected,
        "delivered": r.delivered,
        "lost": r.lost,
        "duplicates": r.duplicates,
        "resumes": r.resumes,
        "replayed": r.replayed,
        "resume_ms": r.resume_ms,
        "p99_ms": r.latency_ms["p99"],
    }


def guarded(fn: Any, *args: Any) -> dict[str, Any]:
    """Run one workload; a failure is recorded in the results, and the suite goes on."""
    try:
        out: dict[str, Any] = fn(*args)
        return out
    except (TimeoutError, RuntimeError, OSError) as exc:
        print(f"    FAILED: {exc!r}", flush=True)
        return {"error": repr(exc)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="bigger rate steps, fewer workloads")
    ap.add_argument(
        "--hold", default="2000,10000", help="idle clients to hold (comma-separated sizes)"
    )
    ap.add_argument("--only", help="comma-separated workloads to run")
    ap.add_argument("--json", default="bench-results.json")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else None
    results: dict[str, Any] = {"machine": _machine(), "started": time.strftime("%F %T")}
    starts = {10: 1000.0, 100: 200.0, 500: 20.0}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("ours", "ours-nolog", "naive", "raw"):
            res = results.setdefault(kind, {})
            with start_server(kind, Path(tmp)) as (proc, port):
                print(f"== {kind} (pid {proc.pid}, port {port})", flush=True)
                for n in (10, 100, 500):
                    if only and f"fanout{n}" not in only:
                        continue
                    if kind == "ours-nolog" and n != 100:
                        continue
                    print(f"  fan-out N={n}", flush=True)
                    cpu0 = cpu_seconds(proc.pid)
                    res[f"fanout{n}"] = guarded(fanout, kind, port, proc.pid, n, starts[n], a.quick)
                    res[f"fanout{n}"]["server_cpu_s"] = cpu_seconds(proc.pid) - cpu0
                if kind == "raw":
                    continue  # the relay speaks no protocol beyond forwarding lines
                if not only or "dm" in only:
                    print("  DM pairs", flush=True)
                    res["dm"] = guarded(dm_pairs, port, a.quick)
                if kind == "ours-nolog":
                    continue
                if kind == "ours" and (not only or "churn" in only):
                    print("  churn: 20 receivers/s cut and resumed", flush=True)
                    res["churn"] = guarded(churn, port)
                    print(f"    {res['churn']}", flush=True)
                if not only or "logins" in only:
                    print("  login storm of 500", flush=True)
                    res["logins"] = guarded(logins, port, 500)
                    print(f"    {res['logins']}", flush=True)
                if not only or "slow" in only:
                    print("  one client stops reading", flush=True)
                    res["slow"] = guarded(slow_reader, port, 200.0)
                    print(f"    {res['slow']}", flush=True)
            if kind in ("raw", "ours-nolog") or (only and "hold" not in only):
                continue
            failed_at = 0
            for n in (int(x) for x in a.hold.split(",")):
                if failed_at:
                    # A server that could not hold fewer will not hold more: save the minutes.
                    res[f"hold{n}"] = {"error": f"not tried: did not hold {failed_at:,}"}
                    continue
                # A fresh server per size, so RSS per connection is not blurred by the last.
                with start_server(kind, Path(tmp), *HOLD_ARGS[kind], db=f"{kind}-hold{n}") as (
                    proc,
                    port,
                ):
                    print(f"  hold {n} (pid {proc.pid})", flush=True)
                    res[f"hold{n}"] = guarded(hold, port, proc.pid, n)
                    print(f"    {res[f'hold{n}']}", flush=True)
                if "error" in res[f"hold{n}"]:
                    failed_at = n
    Path(a.json).write_text(json.dumps(results, indent=2))
    print()
    print(report(results))
    html_path = Path(a.json).with_name("report.html")
    html_path.write_text(html_report(results))
    print(f"\nthe report with charts: {html_path}")


def html_report(r: dict[str, Any]) -> str:
    """bench/report.html: the comparison table, then per workload every server's steps on
    the same axes (rate against deliveries/s, rate against p99)."""
    import html

    from chatroom_bots.load.report import line_chart, page

    figures = []
    kinds = [k for k in ("ours", "ours-nolog", "naive", "raw") if isinstance(r.get(k), dict)]
    for key, what in (
        ("fanout10", "fan-out, 10 clients"),
        ("fanout100", "fan-out, 100 clients"),
        ("fanout500", "fan-out, 500 clients"),
        ("dm", "DM pairs, 100 bots"),
    ):
        runs = []
        for kind in kinds:
            res = r[kind].get(key)
            if isinstance(res, dict) and res.get("steps"):
                steps = sorted(res["steps"], key=lambda row: row["rate"])
                runs.append((kind, steps))
        if not runs:
            continue
        figures.append(
            line_chart(
                f"{what}: delivered against offered",
                "offered rate (messages/s)",
                "delivered (deliveries/s)",
                [
                    ([s["rate"] for s in st], [s["deliveries_per_s"] for s in st], k)
                    for k, st in runs
                ],
                logx=True,
            )
        )
        figures.append(
            line_chart(
                f"{what}: p99 latency (sustainable: under {P99_LIMIT_MS:g} ms)",
                "offered rate (messages/s)",
                "p99 latency (ms)",
                [([s["rate"] for s in st], [s["p99_ms"] for s in st], k) for k, st in runs],
                logx=True,
            )
        )
    machine = html.escape(json.dumps(r.get("machine", {})))
    body = f"<p>machine: {machine}</p>\n<pre>{html.escape(report(r))}</pre>"
    return page("make bench", "make bench: ours against the baselines", body, figures)


def _ok(res: dict[str, Any], key: str) -> bool:
    return key in res and "error" not in res[key]


def _max(res: dict[str, Any], key: str) -> float:
    best = res.get(key, {}).get("max") or res.get(key, {}).get("best")
    return float(best["deliveries_per_s"]) if best else 0.0


def report(r: dict[str, Any]) -> str:
    ours, naive, raw = r.get("ours", {}), r.get("naive", {}), r.get("raw", {})
    lines = [
        "| workload | ours | naive | raw relay | ours/naive | ours/raw |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if a and b else "-"

    for n in (10, 100, 500):
        key = f"fanout{n}"
        if not _ok(ours, key):
            continue
        o, nv, rw = _max(ours, key), _max(naive, key), _max(raw, key)
        lines.append(
            f"| fan-out N={n}: max sustainable deliveries/s | {o:,.0f} | {nv:,.0f} | "
            f"{rw:,.0f} | {ratio(o, nv)} | {ratio(o, rw)} |"
        )
        fo, fn, fr = (x.get(key, {}).get("fixed_p99_ms", 0) for x in (ours, naive, raw))
        rate = ours[key]["fixed_rate"]
        lines.append(
            f"| fan-out N={n}: p99 ms at {rate:.0f} msg/s | {fo:.2f} | {fn:.2f} | "
            f"{fr:.2f} | {ratio(fo, fn)} | {ratio(fo, fr)} |"
        )
        co, cn, cr = (x.get(key, {}).get("fixed_cpu_ms_per_1k", 0) for x in (ours, naive, raw))
        lines.append(
            f"| fan-out N={n}: server CPU ms per 1,000 deliveries at {rate:.0f} msg/s "
            f"| {co:.1f} | {cn:.1f} | {cr:.1f} | {ratio(co, cn)} | {ratio(co, cr)} |"
        )
        if "half_p99_ms" in ours[key]:
            lines.append(
                f"| fan-out N={n}: ours, p99 ms at half its max "
                f"({ours[key]['half_rate']:.0f} msg/s) | {ours[key]['half_p99_ms']:.2f} "
                "| | | | |"
            )
    if _ok(ours, "dm"):
        o, nv = _max(ours, "dm"), _max(naive, "dm")
        lines.append(
            f"| DM pairs (100 bots): max sustainable DMs/s | {o:,.0f} | {nv:,.0f} | "
            f"| {ratio(o, nv)} | |"
        )
    nolog = r.get("ours-nolog", {})
    for key, what in (("fanout100", "fan-out N=100 deliveries/s"), ("dm", "DM pairs DMs/s")):
        if _ok(ours, key) and _ok(nolog, key):
            on, off = _max(ours, key), _max(nolog, key)
            lines.append(
                f"| {what}: ours with the message log / `--history off` ({off:,.0f}) "
                f"| {on:,.0f} | | | {ratio(on, off)} (on/off) | |"
            )
    if _ok(ours, "churn"):
        c = ours["churn"]
        lines.append(
            f"| churn, 200 bots, 20 cut/s at 500 msg/s: lost / duplicated / replayed "
            f"| {c['lost']} / {c['duplicates']} / {c['replayed']:,} | | | | |"
        )
        lines.append(
            f"| churn: cut to caught up p50 / p99 ms | {c['resume_ms'].get('p50', 0):.1f} / "
            f"{c['resume_ms'].get('p99', 0):.1f} | | | | |"
        )
    if _ok(ours, "logins"):
        lo, ln = ours["logins"], naive.get("logins", {})
        lines.append(
            f"| login storm of 500: logins/s | {lo['per_s']:.0f} | {ln.get('per_s', 0):.0f} | | | |"
        )
        lines.append(
            f"| login storm: connect to user list p50 / p99 ms | "
            f"{lo['ms']['p50']:.0f} / {lo['ms']['p99']:.0f} | "
            f"{ln.get('ms', {}).get('p50', 0):.0f} / {ln.get('ms', {}).get('p99', 0):.0f}"
            " | | | |"
        )
    for key in sorted((k for k in ours if k.startswith("hold")), key=lambda k: int(k[4:])):
        if not _ok(ours, key):
            continue
        ho, hn = ours[key], naive.get(key, {})

        def held(h: dict[str, Any]) -> str:
            if "error" in h:
                why = str(h["error"])
                return why if why.startswith("not tried") else "did not finish logging in"
            if not h:
                return "-"
            return (
                f"{h['still_connected']:,} held, {h['failures']} failed logins, "
                f"probe lost {h['probe_lost']}"
            )

        lines.append(f"| hold {key[4:]} idle clients | {held(ho)} | {held(hn)} | | | |")
        lines.append(
            f"| hold {key[4:]}: logins/s; server RSS per connection (KiB) | "
            f"{ho['logins_per_s']:.0f}; {ho['rss_per_conn_kib']:.0f} | "
            + (
                f"{hn['logins_per_s']:.0f}; {hn['rss_per_conn_kib']:.0f}"
                if _ok(naive, key)
                else "-"
            )
            + " | | | |"
        )
    if _ok(ours, "slow"):
        so, sn = ours["slow"], naive.get("slow", {})
        lines.append(
            f"| one stuck reader, 100 bots at {so['rate']:.0f} msg/s: p99 ms "
            f"without / with | {so['p99_ms_without']:.2f} / {so['p99_ms_with']:.2f} | "
            f"{sn.get('p99_ms_without', 0):.2f} / {sn.get('p99_ms_with', 0):.2f} "
            "| | | |"
        )
    return "\n".join(lines)


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


if __name__ == "__main__":
    main()
