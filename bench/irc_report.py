"""The report of bench/irc_fanout.py: the latency per class of room size, and the
tables of the rounds' medians, a row (or a column) per server (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import statistics

Result = tuple[dict[int, int], int, list[float], list[int], list[float], list[float], list[float]]


CLASSES = [(2, 2), (3, 4), (5, 16), (17, 128), (129, 1 << 30)]


def class_name(lo: int, hi: int) -> str:
    return f"{lo}" if lo == hi else f"{lo}+" if hi == 1 << 30 else f"{lo}-{hi}"


def by_size(sizes: list[int], results: list[Result]) -> dict[str, float]:
    """The latency per class of room size (issue 35: whose messages are late?), printed,
    and as fields of the step's row (``p50_ms 129+``, ...) for the medians of rounds."""
    classes = CLASSES
    fields: dict[str, float] = {}
    lats: list[list[float]] = [[] for _ in classes]
    kernel: list[list[float]] = [[] for _ in classes]  # to the arrival in the socket
    of = [next(k for k, (lo, hi) in enumerate(classes) if lo <= s <= hi) for s in sizes]
    for r in results:
        for x, room, y in zip(r[2], r[3], r[6], strict=True):
            lats[of[room]].append(x)
            kernel[of[room]].append(y)
    for k, ((lo, hi), xs, ys) in enumerate(zip(classes, lats, kernel, strict=True)):
        if not xs:
            continue
        xs.sort()
        ys.sort()
        name = class_name(lo, hi)
        fields[f"p50_ms {name}"] = 1e3 * statistics.median(xs)
        fields[f"p99_ms {name}"] = 1e3 * xs[int(0.99 * (len(xs) - 1))]
        fields[f"p50_kernel_ms {name}"] = 1e3 * statistics.median(ys)
        fields[f"p99_kernel_ms {name}"] = 1e3 * ys[int(0.99 * (len(ys) - 1))]
        print(
            f"   rooms of {name}: {of.count(k)} rooms, {len(xs)} delivered, "
            f"p50 {1e3 * statistics.median(xs):.1f} ms, "
            f"p99 {1e3 * xs[int(0.99 * (len(xs) - 1))]:.1f} ms, max {1e3 * xs[-1]:.1f} ms; "
            f"to the socket p50 {fields[f'p50_kernel_ms {name}']:.1f}, "
            f"p99 {fields[f'p99_kernel_ms {name}']:.1f} ms",
            flush=True,
        )
    return fields


def report(
    args: argparse.Namespace,
    sizes: list[int],
    names: dict[str, str],
    table: dict[str, list[list[dict[str, float]]]],
) -> None:
    """The medians of the alternating rounds per step, a row per server, and each
    server's largest sustainable step (nothing lost, p99 under 50 ms)."""
    shape = (
        f"{len(sizes)} rooms, sizes {min(sizes)}-{max(sizes)}"
        if len(sizes) > 1
        else f"one channel, {args.senders} senders"
    )
    print(f"\n{args.clients} IRC clients, {shape}, {args.duration:g} s per step", end="")
    print(f"; medians of {args.rounds} alternating rounds" if args.rounds > 1 else "")
    print("| server | msg/s | delivered/s | lost | p50 ms | p99 ms | server CPU µs/delivery |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    medians: dict[str, list[dict[str, float]]] = {}
    for kind, runs in table.items():
        medians[kind] = []
        for k in range(len(runs[0])):
            steps = [r[k] for r in runs]
            m = {f: statistics.median(x[f] for x in steps if f in x) for f in steps[0]}
            m["lost"] = max(x["lost"] for x in steps)
            medians[kind].append(m)
            spread = ""
            if len(steps) > 1:
                cpus = sorted(x["cpu_us"] for x in steps)
                spread = f" ({cpus[0]:.2f}-{cpus[-1]:.2f})"
            print(
                f"| {names[kind]} | {m['rate']:.0f} | {m['delivered_per_s']:,.0f} | "
                f"{m['lost']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
                f"{m['cpu_us']:.2f}{spread} |"
            )
    if args.by_size and len(sizes) > 1:
        print_by_size(names, medians, kernel=False)
        print_by_size(names, medians, kernel=True)
    for kind, rows in medians.items():
        ok = [r for r in rows if r["lost"] == 0 and r["p99_ms"] < 50]
        best = max(ok, key=lambda r: r["delivered_per_s"]) if ok else None
        print(
            f"{names[kind]}: max sustainable "
            + (
                f"{best['delivered_per_s']:,.0f} deliveries/s (p99 {best['p99_ms']:.1f} ms)"
                if best
                else "none of the steps"
            )
        )


def print_by_size(
    names: dict[str, str], medians: dict[str, list[dict[str, float]]], kernel: bool
) -> None:
    """p50 / p99 per class of room size, medians of the rounds, a column per server;
    ``kernel``: to the data's arrival in the socket (kernel_time)."""
    kinds = [k for k in medians if any(f.startswith("p99_ms ") for r in medians[k] for f in r)]
    to = "_kernel" if kernel else ""
    for k in range(len(medians[kinds[0]]) if kinds else 0):
        print(
            f"\nby room size at {medians[kinds[0]][k]['rate']:.0f} msg/s, p50 / p99 ms"
            + (", from the actual send to the arrival in the socket:" if kernel else ":")
        )
        print("| rooms | " + " | ".join(names[kind] for kind in kinds) + " |")
        print("| --- |" + " ---: |" * len(kinds))
        for lo, hi in [*CLASSES, (0, 0)]:
            name = class_name(lo, hi) if hi else ""
            key = f" {name}" if name else ""
            cells = []
            for kind in kinds:
                row = medians[kind][k]
                got = row.get(f"p50{to}_ms{key}"), row.get(f"p99{to}_ms{key}")
                cells.append("-" if None in got else f"{got[0]:.1f} / {got[1]:.1f}")
            print(f"| {name or 'all'} | " + " | ".join(cells) + " |")
