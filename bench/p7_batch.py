"""P7 — batch scoring (`jobs.score`, the scoring pipeline's job) vs in-process prediction.

The model: P6's (XGBoost on 10k housing rows, 100 rounds, saved as the train job saves it).

Ours: `jobs.score.score_stream` on a CSV file of N rows (an id column + the features): pyarrow's
incremental reader, the endpoint's cell rules, scaling and `predict_scaled` per batch, and the CSV
writer (input columns as text + `prediction`) — the whole job minus the S3 transfer, whose speed is
the network's, not ours (the job streams the S3 body into the same reader and uploads the written
file with a multipart upload).

Baseline: in-process `ServingModel.predict_scaled` on the same rows, already a float matrix in
memory (numpy scaling included) — the cheapest way to get the same predictions, with no parsing or
writing at all. Target: ≥ 0.5× its rows/s — reading and writing text may cost as much as the model,
not more (docs/scoring.md, "Batch transform or our own job").
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bench.harness import RATIO_AT_LEAST, Row, Target, not_measured
from bench.p6_endpoint import build_model
from bench.support import housing

os.environ.setdefault("GOMP_SPINCOUNT", "10000")  # as P6: the same OpenMP setting on both sides

KEY = "P7"
TARGET = Target(RATIO_AT_LEAST, 0.5)


def run(quick: bool, workdir: Path, report: Callable[[Row], None]) -> None:
    try:
        from jobs.model_io import load_model_dir
        from jobs.score import score_stream
        from jobs.serve import Predictor
    except ImportError as error:
        report(not_measured(KEY, "batch scoring", "rows/s", TARGET, f"jobs cannot be imported: {error}"))
        return
    rows = 200_000 if quick else 1_000_000
    model_dir = workdir / "model"
    features = build_model(model_dir)
    frame = housing(rows, seed=17)[features]
    frame.insert(0, "house_id", np.arange(rows))
    source = workdir / "to-score.csv"
    frame.to_csv(source, index=False)
    size_mb = source.stat().st_size / 1e6

    model = load_model_dir(model_dir)
    matrix = frame[features].to_numpy(dtype=float)
    mean, scale = model.preprocessor.mean, model.preprocessor.scale
    best_local = min(_timed(lambda: model.predict_scaled((matrix - mean) / scale)) for _ in range(3))
    local_rate = rows / best_local

    predictor = Predictor(model_dir)
    header = ["house_id", *features]
    timings = []
    for attempt in range(2):
        output = workdir / f"predictions-{attempt}.csv"
        with source.open("rb") as body:
            timings.append(_timed(lambda: score_stream(body, header, predictor, output)))
    best = min(timings)
    written = np.loadtxt(output, delimiter=",", skiprows=1, usecols=len(header), max_rows=1000)
    expected = model.predict_scaled((matrix[:1000] - mean) / scale)
    if not np.allclose(written, expected, rtol=1e-6):
        raise RuntimeError("the batch job's predictions differ from in-process predict_scaled")
    report(Row(KEY, f"batch scoring, {rows:,}-row CSV ({size_mb:.0f} MB) to predictions CSV", rows / best, local_rate,
               "rows/s", TARGET,
               notes=(f"ours: jobs.score.score_stream file to file (parse, check, scale, predict, write), best of "
                      f"{len(timings)}; baseline: in-process predict_scaled on the rows already in memory, best of 3; "
                      "S3 transfer excluded on both sides"),
               details={"rows": rows, "seconds": best, "baseline_seconds": best_local, "csv_mb": size_mb}))


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started
