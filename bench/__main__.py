"""``python -m bench [all|placement|dispatch|sweep|events] [options]``: run Hive's benchmarks.

Each prints its table and writes JSON to var/bench/<name>.json (plus a timestamped
copy). Options after the benchmark's name go to it (``python -m bench placement --help``).
"""
from __future__ import annotations

import sys

NAMES = ("all", "placement", "dispatch", "sweep", "events")
USAGE = "usage: python -m bench [all|placement|dispatch|sweep|events] [benchmark options]"


def main(argv: list[str]) -> int:
    name = argv[0] if argv and not argv[0].startswith("-") else "all"
    rest = argv[1:] if argv and not argv[0].startswith("-") else argv
    if name in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if name not in NAMES:
        print(f"unknown benchmark {name!r}\n{USAGE}", file=sys.stderr)
        return 2
    from bench import dispatch, placement

    if name == "all" and rest:
        print("options apply to one benchmark; run `python -m bench placement ...` or `... dispatch ...`", file=sys.stderr)
        return 2
    if name in ("all", "placement"):
        placement.main(rest)
    if name in ("all", "dispatch"):
        dispatch.main(rest)
    if name in ("all", "sweep"):
        from bench import sweep

        sweep.run_isolated(rest)  # it configures Django for itself, in a child process
    if name in ("all", "events"):
        import subprocess

        # The events benchmark sets up its own Django environment: keep it out of this process.
        subprocess.run([sys.executable, "-m", "bench.events", *rest], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
