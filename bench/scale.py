"""The cost curve (`make bench-scale`): P4 — CSV to registered model — at 100k, 1M and 10M rows with
bulk ingestion, each step's peak memory next to the bare script's, and where this machine runs out.

Ours: one `local.cloud.LocalCloud` (event delivery off, as P4), then `local.cli.pipeline.run_csv`
with `IngestionMode=OfflineStore` (the bulk mode; Auto picks it from 100k rows anyway) and the
pipeline's other defaults. Baseline: bench/p4_end_to_end.py's plain pandas + xgboost script, run in
a child process of its own so its peak is its own.

Memory, sampled from the bench side (nothing in the executor or the jobs is changed to measure it):
a sampler thread walks this process's descendants with psutil every SAMPLE_SECONDS and records, per
sample, the proportional set size (PSS: shared pages — Ray's object store, the interpreter's libraries
mapped by every worker — counted once, split between the processes that map them; a plain RSS sum would
count them once per process) of
  * the job: each job's host processes (`python -m jobs.<step>` and their children) plus the Ray
    workers (`ray::…`), which do the step's distributed work on the shared head;
  * the local cloud: this process (the executor, the gateway and moto, which keeps S3 objects in
    memory) and every descendant (the Ray head's daemons, the jobs) — what the machine must hold
    while the step runs.
Each step's peak is the largest sample between its StartTime and EndTime (ListPipelineExecutionSteps).
The bare script's peak is its process's ru_maxrss (getrusage of the child; one process, so RSS is
its PSS but for a few shared-library pages).

Projection: per step, a least-squares line through (rows, peak) of every measured size; the rows at
which that line reaches the machine's memory (MemTotal) is where the step runs out; the step with the
fewest rows hits it first. Lines, not curves: every step's memory here is the data plus a fixed part
(interpreters, Ray), which is what the measured points show (see the fit's residuals in the JSON).

Data: the housing generator (local.cli.datagen) in chunks of CHUNK_ROWS rows, each chunk its own seed,
appended to one CSV on disk, so 10M rows never sit in memory at once (the first chunk is P4's data).

    python -m bench.scale --sizes 100000,1000000 [--sizes 10000000]   # results merge by size
Results: bench/RESULTS-scale.json (every measured size, merged across runs) and the generated
bench/RESULTS-scale.md.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench.harness import REPO_ROOT
from bench.support import local_aws_env, patched_environ, timed

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_JSON = BENCH_DIR / "RESULTS-scale.json"
RESULTS_MD = BENCH_DIR / "RESULTS-scale.md"
DEFAULT_SIZES = (100_000, 1_000_000, 10_000_000)
CHUNK_ROWS = 1_000_000
SEED = 7
TARGET_COLUMN = "PRICE"
SAMPLE_SECONDS = 0.25
RUN_TIMEOUT_SECONDS = 4 * 3600
GIB = 1024 ** 3


# --------------------------------------------------------------------------- data
def write_csv(rows: int, path: Path, chunk_rows: int = CHUNK_ROWS) -> Path:
    """`rows` housing rows (noise-free, as P4) streamed to `path` one chunk at a time."""
    from local.cli.datagen import generate_housing

    with path.open("w", encoding="utf-8", newline="") as out:
        for index, start in enumerate(range(0, rows, chunk_rows)):
            chunk = generate_housing(min(chunk_rows, rows - start), SEED + index, 0.0)
            chunk.to_csv(out, index=False, header=index == 0)
    return path


# --------------------------------------------------------------------------- memory sampling
def is_job_process(cmdline: Sequence[str]) -> bool:
    """A job's host process (`python -m jobs.<step>`) or a Ray worker doing a step's work."""
    if cmdline and cmdline[0].startswith("ray::"):
        return True
    return any(part == "-m" and nxt.startswith("jobs.") for part, nxt in zip(cmdline, cmdline[1:]))


class TreeSampler:
    """Samples (time, job PSS, whole-tree PSS) of this process's descendants in a thread."""

    def __init__(self, interval: float = SAMPLE_SECONDS):
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._job_pids: set[int] = set()

    def __enter__(self) -> "TreeSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        me = self._psutil.Process()
        while not self._stop.is_set():
            self.samples.append(self.sample(me))
            self._stop.wait(self.interval)

    def sample(self, root: Any) -> tuple[float, int, int]:
        job = 0
        try:
            # This process is part of the local cloud: the executor, the gateway and moto (which
            # holds every S3 object) run in it.
            total = root.memory_full_info().pss
        except self._psutil.Error:
            total = 0
        try:
            children = root.children(recursive=True)
        except self._psutil.Error:
            children = []
        pids = {p.pid for p in children}
        for process in children:
            try:
                pss = process.memory_full_info().pss
                # A job's children (its Ray driver's helpers) belong to the job too.
                if process.pid not in self._job_pids and (
                        is_job_process(process.cmdline()) or process.ppid() in self._job_pids):
                    self._job_pids.add(process.pid)
            except self._psutil.Error:
                continue  # it ended between the listing and the read
            total += pss
            if process.pid in self._job_pids:
                job += pss
        self._job_pids &= pids
        return time.time(), job, total

    def peak(self, start: float, end: float) -> tuple[int, int]:
        """(job, tree) peak bytes among the samples in [start, end]."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        return (max((s[1] for s in inside), default=0), max((s[2] for s in inside), default=0))


# --------------------------------------------------------------------------- the two sides
BARE_SCRIPT = """
import json, resource, sys
from pathlib import Path
from bench.p4_end_to_end import plain_script
ranges, static, trials = json.loads(sys.argv[3])
metrics = plain_script(Path(sys.argv[1]), Path(sys.argv[2]), ranges, static, trials)
print(json.dumps({"metrics": metrics, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run_bare_script(csv_path: Path, out: Path, ranges: dict, static: dict, trials: int) -> dict[str, Any]:
    """The bare script in a child process: {"seconds", "metrics", "peak_bytes"}."""
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", BARE_SCRIPT, str(csv_path), str(out),
                           json.dumps([ranges, static, trials])],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the bare script failed: {done.stderr.strip()[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "metrics": result["metrics"], "peak_bytes": result["maxrss_kib"] * 1024}


def step_windows(cloud: Any, execution_arn: str) -> list[tuple[str, float, float]]:
    steps = cloud.client("sagemaker").list_pipeline_execution_steps(
        PipelineExecutionArn=execution_arn, SortOrder="Ascending")["PipelineExecutionSteps"]
    return [(s["StepName"], s["StartTime"].timestamp(), s["EndTime"].timestamp())
            for s in steps if s.get("StartTime") and s.get("EndTime")]


def measure_size(cloud: Any, rows: int, workdir: Path, ranges: dict, static: dict, trials: int) -> dict[str, Any]:
    from local.cli.pipeline import run_csv

    csv_path = write_csv(rows, workdir / f"houses-{rows}.csv")
    print(f"[scale] {rows:,} rows: {csv_path.stat().st_size / 1e6:,.0f} MB of CSV; bare script", flush=True)
    bare = run_bare_script(csv_path, workdir / f"bare-{rows}", ranges, static, trials)
    print(f"[scale] {rows:,} rows: bare script {bare['seconds']:.0f} s, peak {bare['peak_bytes'] / GIB:.2f} GiB; "
          "pipeline", flush=True)
    with TreeSampler() as sampler:
        seconds, result = timed(run_csv, cloud, csv_path, TARGET_COLUMN, timeout=RUN_TIMEOUT_SECONDS,
                                progress=lambda message: print(f"[scale] {message}", flush=True),
                                parameter_overrides={"MaxTuningJobs": str(trials), "IngestionMode": "OfflineStore"})
    csv_path.unlink()
    point: dict[str, Any] = {
        "rows": rows, "measured_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": list(os.getloadavg()), "status": result.get("status"), "seconds": seconds,
        "bare": bare, "metrics": result.get("metrics"), "steps": {},
    }
    if result.get("status") != "registered":
        point["reason"] = " ".join(str(result.get("reason")).split())[:300]
    if result.get("execution_arn"):
        for name, start, end in step_windows(cloud, result["execution_arn"]):
            job, tree = sampler.peak(start, end)
            # A step shorter than one sampling interval (a condition, a registration) has no sample.
            point["steps"][name] = {"seconds": end - start, "job_peak_bytes": job or None, "tree_peak_bytes": tree or None}
    return point


# --------------------------------------------------------------------------- projection and report
def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def fit_line(points: Sequence[tuple[int, int]]) -> tuple[float, float] | None:
    """(intercept bytes, bytes per row) by least squares; None with fewer than two sizes."""
    if len({rows for rows, _ in points}) < 2:
        return None
    slope, intercept = np.polyfit([float(r) for r, _ in points], [float(b) for _, b in points], 1)
    return float(intercept), float(slope)


def rows_at(line: tuple[float, float] | None, limit: int) -> float | None:
    """Rows at which the line reaches `limit` bytes; None when it does not grow."""
    if line is None or line[1] <= 0:
        return None
    return (limit - line[0]) / line[1]


def projection(points: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """Per step: its line through the whole-tree peaks and where it reaches `limit`; the same for
    the job's own peaks and the bare script."""
    steps = sorted({name for p in points for name in p["steps"]})
    per_step = {}
    for name in steps:
        tree = [(p["rows"], p["steps"][name]["tree_peak_bytes"]) for p in points
                if (p["steps"].get(name) or {}).get("tree_peak_bytes")]
        job = [(p["rows"], p["steps"][name]["job_peak_bytes"]) for p in points
                if (p["steps"].get(name) or {}).get("job_peak_bytes")]
        tree_line, job_line = fit_line(tree), fit_line(job)
        per_step[name] = {"tree_line": tree_line, "tree_rows_at_limit": rows_at(tree_line, limit),
                          "job_line": job_line, "job_rows_at_limit": rows_at(job_line, limit)}
    bare_line = fit_line([(p["rows"], p["bare"]["peak_bytes"]) for p in points])
    first = min(((v["tree_rows_at_limit"], name) for name, v in per_step.items() if v["tree_rows_at_limit"]),
                default=None)
    return {"limit_bytes": limit, "steps": per_step, "bare_line": bare_line,
            "bare_rows_at_limit": rows_at(bare_line, limit),
            "first_step": first[1] if first else None, "first_rows": first[0] if first else None}


def gib(value: float | None) -> str:
    return "—" if not value else f"{value / GIB:.2f} GiB"


def millions(rows: float | None) -> str:
    return "—" if rows is None else f"{rows / 1e6:,.0f}M rows"


def render(points: list[dict[str, Any]], proj: dict[str, Any]) -> str:
    lines = [
        "# Cost curve (`make bench-scale`)", "",
        "Generated by `python -m bench.scale` (bench/scale.py says how it measures); do not edit by hand. "
        "P4 (CSV → registered model, bulk ingestion, 4 tuning trials) at each size; memory is PSS sampled "
        f"every {SAMPLE_SECONDS} s from the bench side: **job** = the step's job processes and the Ray workers, "
        "**local cloud** = every process of the local cloud (moto holds S3 objects in memory) while the step "
        "runs; bare = the plain pandas + xgboost script's peak RSS (bench/p4_end_to_end.py).", "",
        f"- Machine: {os.cpu_count()} cores, {machine_memory_bytes() / GIB:.1f} GiB memory; "
        f"{platform.platform()}; Python {platform.python_version()}",
        "",
        "| Rows | Measured | Load (1 min) | Ours | Bare script | Ratio | Bare peak | Step | Step time | Job peak | Local cloud peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        first = True
        for name, step in p["steps"].items():
            head = (f"| {p['rows']:,} | {p['measured_at']} | {p['load_average'][0]:.2f} | {p['seconds']:.0f} s"
                    + (f" ({p['status']})" if p["status"] != "registered" else "")
                    + f" | {p['bare']['seconds']:.0f} s | {p['seconds'] / p['bare']['seconds']:.2f}× "
                    f"| {gib(p['bare']['peak_bytes'])} ") if first else "| | | | | | | "
            lines.append(f"{head}| {name} | {step['seconds']:.0f} s | {gib(step['job_peak_bytes'])} "
                         f"| {gib(step['tree_peak_bytes'])} |")
            first = False
        if not p["steps"]:
            lines.append(f"| {p['rows']:,} | {p['measured_at']} | {p['load_average'][0]:.2f} | not measured: "
                         f"{p.get('reason', p['status'])} | {p['bare']['seconds']:.0f} s | — | {gib(p['bare']['peak_bytes'])} | | | | |")
    lines += ["", f"## Where {proj['limit_bytes'] / GIB:.1f} GiB runs out (a line per step through the measured sizes)", "",
              "| Step | Local cloud: GiB + GiB per 1M rows | runs out at | Job alone: GiB + GiB per 1M rows | runs out at |",
              "|---|---|---|---|---|"]

    def line_text(line: tuple[float, float] | None) -> str:
        return "—" if line is None else f"{line[0] / GIB:.2f} + {line[1] * 1e6 / GIB:.3f}"

    for name, step in proj["steps"].items():
        if step["tree_line"] is None and step["job_line"] is None:
            continue  # no step window long enough to sample at two sizes
        lines.append(f"| {name} | {line_text(step['tree_line'])} | {millions(step['tree_rows_at_limit'])} "
                     f"| {line_text(step['job_line'])} | {millions(step['job_rows_at_limit'])} |")
    lines.append(f"| bare script | {line_text(proj['bare_line'])} | {millions(proj['bare_rows_at_limit'])} | | |")
    lines.append("")
    if proj["first_step"]:
        lines.append(f"First to run out: **{proj['first_step']}**, at about **{millions(proj['first_rows'])}** "
                     f"(the bare script at {millions(proj['bare_rows_at_limit'])}).")
    else:
        lines.append("No projection yet: it needs two measured sizes.")
    return "\n".join(lines) + "\n"


def load_points(path: Path = RESULTS_JSON) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8"))["points"]


def merge(points: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_rows = {p["rows"]: p for p in points}
    by_rows.update({p["rows"]: p for p in new})
    return [by_rows[rows] for rows in sorted(by_rows)]


def write_results(points: list[dict[str, Any]], json_path: Path = RESULTS_JSON, md_path: Path = RESULTS_MD) -> None:
    usable = [p for p in points if p["status"] == "registered" and p["steps"]]
    proj = projection(usable, machine_memory_bytes())
    json_path.write_text(json.dumps({"points": points, "projection": proj}, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(render(points, proj), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default=",".join(str(s) for s in DEFAULT_SIZES),
                        help="comma-separated row counts (default: 100k, 1M, 10M)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a temp dir)")
    args = parser.parse_args(argv)
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]

    import tempfile

    from bench.p4_end_to_end import definition, tuning_settings
    from local.cloud import LocalCloud

    ranges, static, trials = tuning_settings(definition())
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.workdir) as scratch, \
            patched_environ(local_aws_env()):
        workdir = Path(scratch)
        cloud = LocalCloud(workdir / "state", dispatch_events=False, write_cloud_file=False).start()
        try:
            for rows in sizes:
                point = measure_size(cloud, rows, workdir, ranges, static, trials)
                # Written after each size, so a long 10M run that is stopped keeps what it measured.
                write_results(merge(load_points(), [point]))
                print(f"[scale] {rows:,} rows: {point['status']} in {point['seconds']:.0f} s", flush=True)
        finally:
            cloud.stop()
    print(RESULTS_MD.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
