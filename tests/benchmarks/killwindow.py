"""Kill window: how long a SIGKILLed child's messages stay hidden, SQS requests per 1000
messages, and duplicates per kill, for this checkout and (--before DIR) an older one, run side
by side on the same server.

    python tests/benchmarks/killwindow.py                        # local moto server
    python tests/benchmarks/killwindow.py --before /tmp/before   # and an older checkout
    python tests/benchmarks/killwindow.py --variants duplicates --before DIR

Variants (all of them unless --variants says otherwise):

  window      a steady drain (--messages jobs of 0.05 s) by 6 children that are SIGKILLed one
              at a time every 0.3-0.9 s for --kill-seconds, and 2 never killed; every SQS answer
              --latency late (the unreported-receive window: SQS answered, the parent not yet
              told). visibility_timeout 300, receive_visibility_timeout left at its default.
              For each message a killed child held unfinished: kill to its next receive.
  requests    the same drain without kills or latency: SQS requests per 1000 messages.
  duplicates  2 children of concurrency 8 (1 s jobs) killed as above, 1 never killed:
              messages run twice per kill, against the jobs that were running at the kills.

The harness (tests/chaos/harness.py, shared with tests/chaos/test_kill_window.py) runs the
supervisor of the checkout given, behind a support.TcpProxy that keeps every ReceiveMessage
answer (when SQS received what) and counts requests by operation. A checkout without
``concurrency`` skips the duplicates variant. An older checkout's messages stay hidden up to
its visibility_timeout (300 s): its window run takes that long.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import common

# After common, which puts the repo's tests/ on sys.path (the harness lives in tests/chaos/).
HARNESS = common.REPO / "tests" / "chaos" / "harness.py"
from chaos.harness import KillRun, run_kills  # noqa: E402

MAIN_OPERATIONS = ["ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch"]


def window(url: str, workdir: Path, repo: Path, args: argparse.Namespace) -> KillRun:
    return run_kills(
        common.client(url),
        port(url),
        workdir,
        repo=repo,
        messages=args.messages,
        kill_seconds=args.kill_seconds,
        latency=args.latency,
        visibility_timeout=300,
        deadline=args.kill_seconds + 420,
        seed=args.seed,
    )


def requests(url: str, workdir: Path, repo: Path, args: argparse.Namespace) -> KillRun:
    return run_kills(
        common.client(url),
        port(url),
        workdir,
        repo=repo,
        messages=args.messages,
        kill_seconds=0,
        processes=2,
        survivors=0,
        latency=0,
        visibility_timeout=300,
        deadline=300,
        seed=args.seed,
    )


def duplicates(url: str, workdir: Path, repo: Path, args: argparse.Namespace) -> KillRun:
    return run_kills(
        common.client(url),
        port(url),
        workdir,
        repo=repo,
        messages=args.messages // 2,
        kill_seconds=args.kill_seconds,
        kill_every=(0.5, 1.5),
        job_seconds=1.0,
        processes=2,
        survivors=1,
        concurrency=8,
        latency=0.1,
        visibility_timeout=300,
        deadline=args.kill_seconds + 420,
        seed=args.seed,
    )


def port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def knows(repo: Path, key: str) -> bool:
    """The checkout's config schema has this YAML key."""
    schema = [repo / "supervisor" / "config" / "schema.py", repo / "supervisor" / "config.py"]
    return any(path.exists() and key in path.read_text() for path in schema)


def report_window(rows: list[tuple[str, KillRun]], over: float) -> None:
    print(f"\nhidden time after a kill (kill to next receive), seconds; > {over:g} s")
    header = ["code", "messages", "kills", "back", "max", "p99", "p50", f">{over:g}s"]
    header += ["unexplained", "lost", "wall s"]
    table(header, [_window_row(name, run, over) for name, run in rows])


def _window_row(name: str, run: KillRun, over: float) -> list[str]:
    w = run.window
    return [
        name,
        str(run.messages),
        str(len(run.kills)),
        str(len(w.hidden)),
        f"{w.longest():.1f}",
        f"{w.quantile(0.99):.1f}",
        f"{w.quantile(0.5):.1f}",
        str(w.longer_than(over)),
        str(len(w.unexplained)),
        str(run.lost),
        f"{run.seconds:.0f}",
    ]


def report_requests(title: str, rows: list[tuple[str, KillRun]]) -> None:
    seen = set().union(*(run.requests for _, run in rows))
    ops = [op for op in MAIN_OPERATIONS if op in seen] + sorted(seen - set(MAIN_OPERATIONS))
    print(f"\nSQS requests per 1000 messages, {title} (start to empty queue, via the proxy)")
    body = []
    for name, run in rows:
        per = 1000 / run.messages
        cells = [f"{run.requests.get(op, 0) * per:.1f}" for op in ops]
        body.append([name, *cells, f"{sum(run.requests.values()) * per:.1f}"])
    table(["code", *ops, "total"], body)


def report_duplicates(rows: list[tuple[str, KillRun]]) -> None:
    print("\nconcurrency 8: messages run twice, per kill")
    header = ["code", "messages", "kills", "ran twice", "per kill", "running at kills", "lost"]
    body = [
        [
            name,
            str(run.messages),
            str(len(run.kills)),
            str(run.ran_twice),
            f"{run.ran_twice / max(1, len(run.kills)):.2f}",
            str(run.running_at_kills),
            str(run.lost),
        ]
        for name, run in rows
    ]
    table(header, body)


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for line in [header, *rows]:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoint", help="an SQS endpoint (default: start a local moto server)")
    parser.add_argument("--before", type=Path, help="also run the supervisor of this checkout")
    parser.add_argument("--variants", default="window,requests,duplicates")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--kill-seconds", type=float, default=40)
    parser.add_argument("--latency", type=float, default=0.4)
    parser.add_argument("--over", type=float, default=5.0, help="count hidden longer than this")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args()
    variants = args.variants.split(",")
    checkouts = [("ours", common.REPO)] + ([("before", args.before)] if args.before else [])
    with common.endpoint(args.endpoint) as url, tempfile.TemporaryDirectory() as tmp:
        print(f"endpoint {url}; {args.messages} messages per run; checkouts {checkouts}")
        for variant, run in (("window", window), ("requests", requests)):
            if variant in variants:
                rows = []
                for name, repo in checkouts:
                    rows.append((name, run(url, Path(tmp), repo, args)))
                    print(f"  {variant} {name}: done in {rows[-1][1].seconds:.0f} s", flush=True)
                if variant == "window":
                    report_window(rows, args.over)
                    report_requests("with kills", rows)
                else:
                    report_requests("no kills, no latency", rows)
        if "duplicates" in variants:
            rows = []
            for name, repo in checkouts:
                if not knows(repo, "concurrency"):
                    print(f"  duplicates {name}: skipped, that checkout has no concurrency")
                    continue
                rows.append((name, duplicates(url, Path(tmp), repo, args)))
                print(f"  duplicates {name}: done in {rows[-1][1].seconds:.0f} s", flush=True)
            if rows:
                report_duplicates(rows)


if __name__ == "__main__":
    main()
