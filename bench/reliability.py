"""`make reliability`: every fault, overload, fuzz and security case at the long scale.

Prints one row per case (what was done, what was expected, observed counts, verdict), writes
bench/results/reliability.json and exits non-zero on any loss, duplicate, failed check or crash.
Uses GATEWATCH_KAFKA when set, else starts a broker of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gatewatch import devkafka  # noqa: E402
from tests.faults.cases import CaseEnv  # noqa: E402
from tests.faults.harness import CaseResult, Scale, exit_code, render_table, run_case, write_json  # noqa: E402
from tests.faults.registry import all_cases, case_env  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="the make-test sizes (quick check of the runner)")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    scale = Scale.short() if args.short else Scale.long()
    cases = all_cases()
    chosen = [name for name in args.cases.split(",") if name] or list(cases)
    base = Path(tempfile.mkdtemp(prefix="gatewatch-reliability-"))
    kafka, own_broker = os.environ.get("GATEWATCH_KAFKA", ""), None
    if not kafka:
        own_broker = base / "kafka"
        kafka = devkafka.start(own_broker).bootstrap
    results = []
    try:
        for name in chosen:
            print(f"running {name} ...", flush=True)
            env = case_env(base, f"chdb://{base / 'store'}", kafka, name)

            def case(s: Scale, env: CaseEnv = env, name: str = name) -> CaseResult:
                return cases[name](env, s)

            results.append(run_case(name, case, scale))
            print(f"  {results[-1].verdict} in {results[-1].seconds}s: {results[-1].observed()}", flush=True)
    finally:
        if own_broker:
            devkafka.stop(own_broker)
    print()
    print(render_table(results))
    for result in results:
        if result.detail:
            print(f"\n{result.name}: {result.detail}")
    write_json(results, ROOT / "bench" / "results" / "reliability.json")
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
