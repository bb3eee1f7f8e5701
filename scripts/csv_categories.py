"""Every category of CSV people drop, through `mlops local run` on one local cloud: each must end as
docs/csv-format.md says — registered, or quarantined / failed with a reason naming the column, row
or key and how to fix it. Outside `make test` (a registered run takes a minute or more):

    .venv/bin/python scripts/csv_categories.py [--only NAME ...] [--report out.json]

Prints one line per category (expected and actual outcome, the reason) and exits 1 when any
category ends otherwise than expected.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from local.cli.datagen import generate_housing  # noqa: E402
from local.cloud_file import find_running_cloud  # noqa: E402

MLOPS = [str(Path(sys.executable).parent / "mlops")]
ROWS = 2000


@dataclass(frozen=True)
class Category:
    name: str
    file_name: str
    build: Callable[[], str]  # the file's text
    expected: str  # registered | quarantined | failed
    target: str = "PRICE"
    reason_mentions: str = ""  # a fragment the reason must contain (the column, row or key)


def houses(rows: int = ROWS, seed: int = 7) -> pd.DataFrame:
    return generate_housing(rows, seed)


def text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def human_names() -> str:
    return text(houses().rename(columns={"SQUARE_FEET": "Square Feet", "LOT_ACRES": "Lot (acres)",
                                         "GARAGE_SPACES": "größe_m²", "NUM_BATHROOMS": " Baths. ",
                                         "DECK": "prediction", "PRICE": "Sale Price"}))


def reserved_and_case_folded_names() -> str:
    frame = houses().rename(columns={"YEAR_BUILT": "year", "FRONT_PORCH": "record_id", "DECK": "event_time"})
    frame["price"] = frame["PRICE"] % 7  # equal to the target's name after case folding
    return text(frame)


def long_names() -> str:
    frame = houses()
    frame.columns = [("very long column name about " + c + " ") * 4 if c != "PRICE" else c for c in frame.columns]
    return text(frame)


def missing_feature_cells() -> str:
    frame = houses().astype(object)
    frame.loc[frame.index[::5], "LOT_ACRES"] = ""
    frame.loc[frame.index[1::7], "SQUARE_FEET"] = "NaN"
    frame.loc[frame.index[2::9], "DECK"] = "NA"
    return text(frame)


def missing_targets() -> str:
    frame = houses().astype(object)
    frame.loc[frame.index[::10], "PRICE"] = ""
    return text(frame)


def malformed_row_far_past_the_sample() -> str:
    lines = text(houses(40_000)).splitlines()
    lines[38_000] += ",1"
    return "\n".join(lines) + "\n"


def infinite_cell_in_the_head() -> str:
    frame = houses().astype(object)
    frame.loc[3, "LOT_ACRES"] = "inf"
    return text(frame)


def huge_magnitudes() -> str:
    frame = houses()
    frame["SENSOR"] = np.random.default_rng(1).uniform(-1, 1, len(frame)) * 1e300
    return text(frame)


def no_header_row() -> str:
    return houses().to_csv(index=False, header=False)


def constant_target() -> str:
    return text(houses().assign(PRICE=250000))


def text_column() -> str:
    return text(houses().assign(CITY="Seattle"))


CATEGORIES = [
    Category("ordinary file name", "My Houses (2024) #1 & co's, größe.csv", lambda: text(houses()), "registered"),
    Category("long file name", "k" * 240 + ".csv", lambda: text(houses()), "registered"),
    Category("human column names", "human names.csv", human_names, "registered", target="Sale Price"),
    Category("reserved and case-folded names", "reserved names.csv", reserved_and_case_folded_names, "registered"),
    Category("names over Feature Store's length", "long names.csv", long_names, "registered"),
    Category("missing feature cells", "blanks.csv", missing_feature_cells, "registered"),
    Category("missing target cells", "no price sometimes.csv", missing_targets, "registered"),
    Category("huge finite magnitudes", "huge.csv", huge_magnitudes, "registered"),
    Category("malformed row past the sample", "malformed late.csv", malformed_row_far_past_the_sample, "failed",
             reason_mentions="row 37999"),  # data row 37999 is line 38001
    Category("infinite cell in the head", "inf.csv", infinite_cell_in_the_head, "quarantined",
             reason_mentions="LOT_ACRES"),
    Category("no header row", "no header.csv", no_header_row, "quarantined", reason_mentions="no_header_row"),
    Category("constant target", "constant.csv", constant_target, "quarantined", reason_mentions="constant_target"),
    Category("text column", "city.csv", text_column, "quarantined", reason_mentions="CITY"),
]


def run_category(category: Category, workdir: Path, state: Path, env: dict[str, str]) -> dict:
    path = workdir / category.file_name
    path.write_text(category.build(), encoding="utf-8")
    started = time.monotonic()
    run = subprocess.run([*MLOPS, "local", "run", str(path), "--target", category.target, "--json", "--quiet",
                          "--state-dir", str(state), "--timeout", "1200"],
                         env=env, capture_output=True, text=True, timeout=1500)
    seconds = time.monotonic() - started
    try:
        result = json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        result = {"status": f"no result (exit {run.returncode})", "reason": run.stderr[-800:]}
    reason = str(result.get("reason") or "")
    ok = result.get("status") == category.expected and category.reason_mentions in reason
    return {"category": category.name, "expected": category.expected, "status": result.get("status"),
            "reason": reason, "ok": ok, "seconds": round(seconds, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="category names to run (default: all)")
    parser.add_argument("--report", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    chosen = [c for c in CATEGORIES if not args.only or c.name in args.only]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "RAY_ADDRESS"}
    env["SAGEMAKER_SUPPRESS_V2_WARNING"] = "1"
    results = []
    with tempfile.TemporaryDirectory(prefix="csv-categories-") as tmp:
        workdir, state = Path(tmp), Path(tmp) / "state"
        log = (workdir / "up.log").open("w")
        up = subprocess.Popen([*MLOPS, "local", "up", "--state-dir", str(state), "--parameter", "MaxTuningJobs=1",
                               "--parameter", "RMSEThreshold=1e9"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while find_running_cloud(state) is None:
                if up.poll() is not None or time.monotonic() > deadline:
                    print((workdir / "up.log").read_text()[-3000:], file=sys.stderr)
                    return 2
                time.sleep(1)
            for category in chosen:
                result = run_category(category, workdir, state, env)
                results.append(result)
                mark = "ok  " if result["ok"] else "FAIL"
                print(f"{mark} {category.name:34} expected {category.expected:11} got {result['status']:11} "
                      f"{result['seconds']:6.1f} s  {result['reason'][:160]}", flush=True)
        finally:
            # SIGTERM, not SIGINT: a process started in the background by a non-interactive shell
            # inherits SIGINT ignored, and `mlops local up` stops everything on either.
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=180)
            except subprocess.TimeoutExpired:
                up.kill()
                up.wait()
            log.close()
    if args.report:
        args.report.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
