"""The benchmark harness: runs each benchmark in its own process, judges it against its target,
prints the rows and writes the Markdown report.

A benchmark module exposes `run(quick: bool, workdir: Path, report: Callable[[Row], None])` and
calls `report(row)` as soon as each row is measured. Each row carries our
measured value, the baseline measured in the same run, and a `Target`; the ratio is always
ours / baseline. A benchmark that cannot measure something returns a row with `ours=None` and the
reason in `notes` ("not measured: ..."), never a made-up number.

Every benchmark runs in a child process (`python -m bench --child P1 ...`) so Ray, moto and the
servers it starts are gone when it ends, and a benchmark that overruns its time limit is stopped
without taking the others with it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"

RATIO_AT_LEAST = "ratio_at_least"
RATIO_AT_MOST = "ratio_at_most"
VALUE_AT_MOST = "value_at_most"
VALUE_AT_LEAST = "value_at_least"
# Measured and reported, judged elsewhere (the note says where): no "met?" verdict.
REPORTED = "reported"
TARGET_KINDS = (RATIO_AT_LEAST, RATIO_AT_MOST, VALUE_AT_MOST, VALUE_AT_LEAST, REPORTED)


@dataclass(frozen=True)
class Target:
    """What "good enough" means for a row.

    Ratio targets compare ours / baseline with `threshold` (e.g. throughput ≥ 5× the baseline,
    time ≤ 3× the baseline). Value targets compare our value itself, in the row's unit (p99 ≤ 10 ms).
    """

    kind: str
    threshold: float
    note: str = ""  # REPORTED: where the target lives instead

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise ValueError(f"target kind must be one of {TARGET_KINDS}, got {self.kind!r}")
        if self.kind == REPORTED and not self.note:
            raise ValueError("a reported-only target needs a note saying where it is judged")
        if not math.isfinite(self.threshold):
            raise ValueError(f"target threshold must be finite, got {self.threshold}")

    def describe(self, unit: str = "") -> str:
        if self.kind == REPORTED:
            return self.note
        number = format_number(self.threshold)
        if self.kind == RATIO_AT_LEAST:
            return f"≥ {number}× baseline"
        if self.kind == RATIO_AT_MOST:
            return f"≤ {number}× baseline"
        suffix = f" {unit}" if unit else ""
        return f"{'≤' if self.kind == VALUE_AT_MOST else '≥'} {number}{suffix}"

    def is_met(self, ours: float | None, baseline: float | None) -> bool | None:
        """True/False, or None when the row lacks what the target needs (or has no verdict here)."""
        if ours is None or self.kind == REPORTED:
            return None
        if self.kind == VALUE_AT_MOST:
            return ours <= self.threshold
        if self.kind == VALUE_AT_LEAST:
            return ours >= self.threshold
        value = ratio(ours, baseline)
        if value is None:
            return None
        return value >= self.threshold if self.kind == RATIO_AT_LEAST else value <= self.threshold


@dataclass
class Row:
    """One measured quantity: ours, the baseline (same run, same unit) and the target."""

    benchmark: str  # "P1"
    measure: str  # what was measured, with its size: "PutRecord ingestion, 20,000 rows"
    ours: float | None
    baseline: float | None
    unit: str  # "rows/s", "s", "ms", "MB"
    target: Target
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)  # extra numbers, kept in the JSON only

    @property
    def ratio(self) -> float | None:
        return ratio(self.ours, self.baseline)

    @property
    def met(self) -> bool | None:
        return self.target.is_met(self.ours, self.baseline)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["target"] = asdict(self.target)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Row":
        data = dict(data)
        data["target"] = Target(**data["target"])
        return cls(**data)


def not_measured(benchmark: str, measure: str, unit: str, target: Target, why: str) -> Row:
    """The row a benchmark returns when something it needs is missing or failed."""
    return Row(benchmark, measure, None, None, unit, target, notes=f"not measured: {why}")


def ratio(ours: float | None, baseline: float | None) -> float | None:
    if ours is None or baseline is None or baseline == 0:
        return None
    return ours / baseline


def format_number(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{format_number(value)} {unit}".strip()


def format_met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "—"}[met]


# --------------------------------------------------------------------------- benchmarks
@dataclass(frozen=True)
class Benchmark:
    key: str
    title: str
    module: str
    timeout_seconds: float  # full run
    quick_timeout_seconds: float

    def timeout(self, quick: bool) -> float:
        return self.quick_timeout_seconds if quick else self.timeout_seconds


# The whole suite must end within this; each benchmark gets min(its own limit, what is left).
SUITE_BUDGET_SECONDS = 19 * 60
MIN_USEFUL_SECONDS = 30

BENCHMARKS: dict[str, Benchmark] = {
    b.key: b
    for b in (
        Benchmark("P1", "ingestion into the Feature Store", "bench.p1_ingest", 360, 240),
        Benchmark("P2", "preprocess (Ray Data)", "bench.p2_preprocess", 240, 180),
        Benchmark("P3", "training (xgboost-ray)", "bench.p3_train", 240, 180),
        Benchmark("P4", "end to end: CSV to registered model", "bench.p4_end_to_end", 1200, 300),
        Benchmark("P5", "Lambda package size and cold import", "bench.p5_functions", 150, 120),
        Benchmark("P6", "model endpoint latency and throughput", "bench.p6_endpoint", 150, 120),
        Benchmark("P7", "batch scoring by drop", "bench.p7_batch", 150, 120),
    )
}


def select(only: str | None) -> list[Benchmark]:
    """The benchmarks named in `--only` (comma-separated keys, any case), in suite order."""
    if not only:
        return list(BENCHMARKS.values())
    wanted = [part.strip().upper() for part in only.split(",") if part.strip()]
    unknown = [key for key in wanted if key not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    return [b for key, b in BENCHMARKS.items() if key in wanted]


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "memory_gb": None,
        "cpu_model": platform.processor() or platform.machine(),
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    for package in ("ray", "xgboost", "xgboost-ray", "pandas", "pyarrow", "numpy", "moto", "boto3",
                    "aws-lambda-powertools"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- report
def render_markdown(
    rows: Sequence[Row],
    machine: dict[str, Any],
    command: str,
    started_at: str,
    load_before: str,
    load_after: str,
    durations: dict[str, float],
    quick: bool,
) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m bench` (`make bench`); do not edit by hand. Each baseline is measured",
        "in the same run, on the same machine, with the same data. Ratio = ours / baseline.",
        "",
        f"- Command: `{command}`" + (" (quick sizes: a smoke run, not the reference sizes)" if quick else ""),
        f"- Date (UTC): {started_at}",
        f"- Machine: {machine.get('cores')} cores, {machine.get('memory_gb')} GB memory, "
        f"{machine.get('cpu_model')}; {machine.get('os')}",
        f"- Versions: Python {machine.get('python')}, ray {machine.get('ray')}, xgboost "
        f"{machine.get('xgboost')}, xgboost-ray {machine.get('xgboost-ray')}, pandas {machine.get('pandas')}, "
        f"pyarrow {machine.get('pyarrow')}, numpy {machine.get('numpy')}, moto {machine.get('moto')}",
        f"- Load average (1/5/15 min) before: {load_before}; after: {load_after}",
        "- Caveat: the machine is shared; other work (test suites, builds) may have run during the "
        "measurements, which slows both sides but not necessarily equally. Compare ratios, not "
        "absolute numbers, and re-run on an idle machine before drawing fine conclusions.",
        "",
        "| Benchmark | Measure | Ours | Baseline | Ratio | Target | Met? | Notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio_text = "—" if row.ratio is None else f"{format_number(row.ratio)}×"
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    row.benchmark,
                    row.measure,
                    format_value(row.ours, row.unit),
                    format_value(row.baseline, row.unit),
                    ratio_text,
                    row.target.describe(row.unit),
                    format_met(row.met),
                    row.notes,
                )
            )
            + " |"
        )
    if durations:
        lines += ["", "Wall time of each benchmark process (setup, both sides, teardown):", ""]
        lines += [f"- {key}: {seconds:.0f} s" for key, seconds in durations.items()]
    met = [row.met for row in rows]
    lines += [
        "",
        f"Summary: {met.count(True)} met, {met.count(False)} not met, {met.count(None)} not measured "
        f"or without a judgeable target, of {len(rows)} rows.",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def print_row(row: Row) -> None:
    ratio_text = "—" if row.ratio is None else f"{format_number(row.ratio)}x"
    print(
        f"[{row.benchmark}] {row.measure}: ours {format_value(row.ours, row.unit)}, baseline "
        f"{format_value(row.baseline, row.unit)}, ratio {ratio_text}, target "
        f"{row.target.describe(row.unit)}, met: {format_met(row.met).strip('*')}"
        + (f" — {row.notes}" if row.notes else ""),
        flush=True,
    )


# --------------------------------------------------------------------------- running
def run_child(benchmark: Benchmark, quick: bool, workdir: Path, timeout: float) -> list[Row]:
    """Runs one benchmark in a child process; a failure or overrun becomes a not-measured row."""
    result_file = workdir / f"{benchmark.key}.json"
    cmd = [sys.executable, "-m", "bench", "--child", benchmark.key, "--result-file", str(result_file),
           "--workdir", str(workdir / benchmark.key)]
    if quick:
        cmd.append("--quick")
    env = dict(os.environ, SAGEMAKER_SUPPRESS_V2_WARNING="1", PYTHONDONTWRITEBYTECODE="1")
    process = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, start_new_session=True)
    why = None
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        why = f"stopped after its {timeout:.0f} s time limit"
        _stop_child(process)
    except KeyboardInterrupt:
        _stop_child(process)
        raise
    if result_file.exists():
        rows = [Row.from_json(item) for item in json.loads(result_file.read_text())]
        if why:
            rows.append(not_measured(benchmark.key, benchmark.title, "", Target(RATIO_AT_MOST, 1), why))
        return rows
    why = why or f"benchmark process exited with status {process.returncode} without results"
    return [not_measured(benchmark.key, benchmark.title, "", Target(RATIO_AT_MOST, 1), why)]


def _stop_child(process: subprocess.Popen) -> None:
    """SIGTERM first (the child cleans up the servers and Ray head it started), then SIGKILL its
    process group."""
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=45)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.wait()


def child_main(key: str, quick: bool, result_file: Path, workdir: Path) -> int:
    """Inside the child: run the benchmark module, write its rows (partial ones too) as JSON."""

    def on_term(signum, frame):  # let `finally` blocks stop servers and Ray heads
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    benchmark = BENCHMARKS[key]
    workdir.mkdir(parents=True, exist_ok=True)
    collected: list[Row] = []

    def report(row: Row) -> None:
        """Benchmarks call this as each row is measured, so an overrun keeps what was done."""
        collected.append(row)
        print_row(row)
        result_file.write_text(json.dumps([r.to_json() for r in collected], indent=2))

    try:
        module = importlib.import_module(benchmark.module)
        module.run(quick=quick, workdir=workdir, report=report)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the harness shows why, and goes on with the next benchmark
        import traceback

        traceback.print_exc()
        report(not_measured(key, benchmark.title, "", Target(RATIO_AT_MOST, 1),
                            f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"))
        return 1
    if not collected:
        report(not_measured(key, benchmark.title, "", Target(RATIO_AT_MOST, 1), "the benchmark returned no rows"))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark keys, e.g. P1,P3 (default: all)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown report to write")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        return child_main(args.child, args.quick, args.result_file, args.workdir)
    try:
        benchmarks = select(args.only)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    command = "python -m bench" + ("" if not argv else " " + " ".join(shlex.quote(a) for a in argv))
    started_at = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    machine = machine_info()
    load_before = load_average()
    rows: list[Row] = []
    durations: dict[str, float] = {}
    suite_deadline = time.monotonic() + SUITE_BUDGET_SECONDS
    with tempfile.TemporaryDirectory(prefix="mlops-bench-") as tmp:
        for benchmark in benchmarks:
            print(f"== {benchmark.key} {benchmark.title}", flush=True)
            started = time.monotonic()
            limit = min(benchmark.timeout(args.quick), suite_deadline - started)
            if limit < MIN_USEFUL_SECONDS:
                rows.append(not_measured(benchmark.key, benchmark.title, "", Target(RATIO_AT_MOST, 1),
                                         f"the suite's {SUITE_BUDGET_SECONDS // 60}-minute budget was used up"))
            else:
                rows += run_child(benchmark, args.quick, Path(tmp), limit)
            durations[benchmark.key] = time.monotonic() - started
            # Rewritten after each benchmark: an interrupted suite still leaves its results.
            report = render_markdown(rows, machine, command, started_at, load_before, load_average(),
                                     durations, args.quick)
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(report, encoding="utf-8")
    print(f"\nwrote {args.output}", flush=True)
    for row in rows:
        print_row(row)
    return 0
