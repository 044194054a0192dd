"""Run every Testing/Benchmarks/*_speed.py and collect what they write into Testing/Benchmarks/results/.

Each benchmark runs with no arguments (plus --quick when asked for and the benchmark accepts it) in a scratch
working directory, so whatever JSON it writes there by default is collected without knowing its options; its
output goes to results/<name>.log and results/summary.json lists exit codes and durations. Benchmarks that are
absent are simply not run.

    .venv/bin/python Testing/Benchmarks/run_all.py [--quick] [--only seg,dose]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def accepts(script: Path, option: str) -> bool:
    """Whether ``script --help`` mentions ``option`` (benchmarks differ in what they take)."""
    try:
        done = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False
    return option in done.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="pass --quick to benchmarks that accept it")
    parser.add_argument("--only", default="", help="comma-separated name prefixes, e.g. seg,dose")
    args = parser.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    scripts = [s for s in sorted(HERE.glob("*_speed.py")) if not wanted or any(s.stem.startswith(w) for w in wanted)]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    RESULTS.mkdir(exist_ok=True)
    summary = []
    for script in scripts:
        command = [sys.executable, str(script)]
        if args.quick and accepts(script, "--quick"):
            command.append("--quick")
        print(f"== {script.name} {' '.join(command[2:])}", flush=True)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"{script.stem}-") as scratch:
            log = RESULTS / f"{script.stem}.log"
            with open(log, "w") as out:
                process = subprocess.Popen(command, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
                for line in process.stdout:  # show progress and keep it
                    sys.stdout.write(line)
                    out.write(line)
                code = process.wait()
            collected = []
            for produced in sorted(Path(scratch).glob("*.json")):
                shutil.copy2(produced, RESULTS / produced.name)
                collected.append(produced.name)
        seconds = time.perf_counter() - started
        summary.append({"benchmark": script.name, "command": command[1:], "exit_code": code,
                        "seconds": round(seconds, 1), "json": collected, "log": log.name})
        print(f"== {script.name}: exit {code} after {seconds:.0f} s; collected {collected or 'no JSON'}", flush=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nresults in {RESULTS}")
    for item in summary:
        print(f"  {item['benchmark']:<24} exit {item['exit_code']}  {item['seconds']:8.0f} s  "
              f"{', '.join(item['json'])}")
    return 0 if all(item["exit_code"] == 0 for item in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
