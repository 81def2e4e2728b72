"""How fast the command line starts: `keel --help` and a small read command, each against
the bare Python interpreter started the same way in the same run.

    uv run python bench/cli.py [--rounds 20]

Each round runs every command once, in turn, so a busy machine slows all of them alike;
the table reports the median and the 90th percentile of each, and each as a ratio to the
interpreter's own start-up (what any Python CLI pays before its first line runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KEEL = [sys.executable, "-m", "keel"]


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keel-bench-cli-") as tmp:
        env = {**os.environ, "KEEL_HOME": str(Path(tmp) / "home")}
        env.pop("KEEL_DB", None)
        subprocess.run([*KEEL, "init"], env=env, check=True, stdout=subprocess.DEVNULL)
        commands = {
            "python -c pass (baseline)": [sys.executable, "-c", "pass"],
            "keel --help": [*KEEL, "--help"],
            "keel cadence --help": [*KEEL, "cadence", "--help"],
            "keel log --json (a read)": [*KEEL, "log", "--json"],
        }
        for command in commands.values():  # warm the file cache
            timed(command, env)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, command in commands.items():
                samples[name].append(timed(command, env))
    base = statistics.median(samples["python -c pass (baseline)"])
    print(f"{'command':<28} {'median':>9} {'p90':>9} {'÷ python start':>15}")
    for name, times in samples.items():
        times.sort()
        median = statistics.median(times)
        p90 = times[int(0.9 * (len(times) - 1))]
        print(f"{name:<28} {median * 1000:>7.0f}ms {p90 * 1000:>7.0f}ms {median / base:>14.1f}×")
    print(f"\n{args.rounds} rounds; load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
