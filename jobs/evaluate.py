"""Evaluate step: test-set metrics, plots and the comparison with the current champion.

    python -m jobs.evaluate --target-column PRICE --model-package-group-name G \
        --rmse-threshold 15000 --champion-tolerance 0.05

Inputs: `processing/input/model/model.tar.gz` (model.json + preprocessor.json) and
`processing/input/test/*.parquet` (scaled by the preprocess step, target kept).
Outputs in `processing/output/evaluation/`: `evaluation.json` (format in docs/contracts.md; the
pipeline's condition reads `regression_metrics.rmse.value` and `gate.champion_rmse_limit`) and the
PNG plots `predicted_vs_actual.png`, `residuals.png`, `feature_importance.png`, and
`smoke_sample.csv` (a few test rows in raw units with this step's predictions, for the deployment's
smoke test), and a copy of Preprocess's `baseline_statistics.json` (input
`processing/input/preprocessor/`), the drift baseline RegisterModel registers.

On several hosts the step runs once, on the head host (`jobs.ray_cluster.head_only`).

The champion is the group's newest Approved package (`mlops_shared.champion`, the definition the
deployment's rollback uses too). It is scored on the same test rows: they
are unscaled with the challenger's preprocessor and fed raw to the champion, which applies its own.
A champion that cannot be scored (different features or target, unreadable artifact) is reported
with the reason and does not gate the new model; the approver sees why.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import boto3
import numpy as np
import pandas as pd

from jobs import common, ray_cluster
from jobs.baseline import BASELINE_FILE
from jobs.model_io import (
    ModelArtifactError,
    ModelInputError,
    ServingModel,
    extract_model_tar,
    finite_or_none,
    load_model_dir,
)
from mlops_shared.artifacts import (
    prediction_column_for,
    SMOKE_SAMPLE_FILE,
    ChampionScore,
    Estimate,
    EvaluatedRows,
    EvaluationReport,
    Gate,
    R2,
    RegressionMetrics,
)
from mlops_shared.aws import parse_s3_uri
from mlops_shared.champion import champion_arn

log = logging.getLogger("jobs.evaluate")

NO_CHAMPION_LIMIT = 1e308
PLOTS = ("predicted_vs_actual.png", "residuals.png", "feature_importance.png")
EVALUATION_FILE = "evaluation.json"


# --------------------------------------------------------------------------- metrics
def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> RegressionMetrics:
    """RMSE, MAE and R². The standard deviations are those of the estimates: for MAE the standard
    error of the mean absolute error; for RMSE the delta-method standard error
    std(squared errors) / (2·RMSE·√n)."""
    actual = np.asarray(actual, dtype=float)
    errors = np.asarray(predicted, dtype=float) - actual
    n = len(errors)
    squared = errors**2
    rmse = math.sqrt(squared.mean())
    mae = float(np.abs(errors).mean())
    rmse_sd = float(squared.std() / (2 * rmse * math.sqrt(n))) if rmse > 0 else 0.0
    mae_sd = float(np.abs(errors).std() / math.sqrt(n))
    total = float(((actual - actual.mean()) ** 2).sum())
    r2 = 1 - float(squared.sum()) / total if total > 0 else None
    return RegressionMetrics(
        rmse=Estimate(value=rmse, standard_deviation=rmse_sd),
        mae=Estimate(value=mae, standard_deviation=mae_sd),
        r2=R2(value=finite_or_none(r2) if r2 is not None else None,
              note=None if r2 is not None else
              "undefined: every test row has the same target value, so there is no variance to explain"),
    )


def feature_importance(model: ServingModel) -> dict[str, float]:
    """Share of the total gain per feature (0 for features no tree uses), summing to 1."""
    names = model.booster.feature_names or [f"f{i}" for i in range(len(model.feature_order))]
    by_name = dict(zip(names, model.feature_order))
    gains = {by_name.get(k, k): float(v) for k, v in model.booster.get_score(importance_type="gain").items()}
    total = sum(gains.values())
    return {f: (gains.get(f, 0.0) / total if total > 0 else 0.0) for f in model.feature_order}


# --------------------------------------------------------------------------- champion
def latest_approved_package(sagemaker: Any, group: str) -> dict[str, Any] | None:
    """The group's champion (`mlops_shared.champion`), described; None when there is none."""
    arn = champion_arn(group, sagemaker=sagemaker)
    return sagemaker.describe_model_package(ModelPackageName=arn) if arn else None


def load_package_model(s3: Any, package: dict[str, Any], workdir: Path) -> ServingModel:
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    url = containers[0].get("ModelDataUrl") if containers else None
    if not url:
        raise ModelArtifactError("the package has no ModelDataUrl")
    bucket, key = parse_s3_uri(url)
    archive = workdir / "champion.tar.gz"
    s3.download_file(bucket, key, str(archive))
    return load_model_dir(extract_model_tar(archive, workdir / "champion"))


def score_champion(
    challenger: ServingModel, scaled_test: pd.DataFrame, actual: np.ndarray, package: dict[str, Any],
    s3: Any, workdir: Path,
) -> tuple[ChampionScore, "ChampionPredictions | None"]:
    """The champion's score on the challenger's test rows, and its predictions for the plots (None
    when it is not comparable)."""
    arn = package["ModelPackageArn"]

    def not_comparable(reason: str) -> tuple[ChampionScore, None]:
        log.warning("%s: %s", arn, reason)
        return ChampionScore(model_package_arn=arn, rmse=None, mae=None, r2=None, comparable=False,
                             reason=reason), None

    try:
        champion = load_package_model(s3, package, workdir)
        if champion.target != challenger.target:
            raise ModelInputError(f"it predicts {champion.target!r}, not {challenger.target!r}")
        raw = challenger.preprocessor.unscale_frame(scaled_test)
        predicted = champion.predict_raw(raw)
    except (ModelArtifactError, ModelInputError, OSError) as err:
        return not_comparable(f"the champion cannot be scored on this test set: {err}")
    except Exception as err:  # noqa: BLE001 - e.g. the artifact is gone from S3
        return not_comparable(f"the champion's artifact could not be loaded: {type(err).__name__}: {err}")
    metrics = regression_metrics(actual, predicted)
    version = package.get("ModelPackageVersion")
    score = ChampionScore(model_package_arn=arn, rmse=metrics.rmse.value, mae=metrics.mae.value,
                          r2=metrics.r2.value, comparable=True, model_package_version=version)
    return score, ChampionPredictions(predicted=np.asarray(predicted, dtype=float), rmse=metrics.rmse.value,
                                      version=version)


# --------------------------------------------------------------------------- plots
# Enough points to show the shape of the errors; more only make the PNG heavier (an approver's email
# carries these inline). The rows drawn are a seeded sample, so two runs draw the same picture.
MAX_POINTS_PER_SERIES = 4000
PLOT_DPI = 100
CHALLENGER_COLOR, CHAMPION_COLOR, REFERENCE_COLOR = "#0969da", "#bf5700", "#1f2328"


@dataclass(frozen=True)
class ChampionPredictions:
    """What the plots need of a champion scored on the same test rows (`score_champion`)."""

    predicted: np.ndarray
    rmse: float
    version: int | None = None

    @property
    def label(self) -> str:
        version = f" v{self.version}" if self.version is not None else ""
        return f"champion{version} (RMSE {human_number(self.rmse)})"


def human_number(value: float, _position: object = None) -> str:
    """12,345 -> '12.3k', 1,234,567 -> '1.23M', 950 -> '950': tick labels a person reads at a glance
    (matplotlib's default would print 1e6 as an offset above the axis)."""
    magnitude = abs(value)
    for threshold, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            text = f"{value / threshold:.3g}"
            return f"{text}{suffix}"
    if magnitude == 0:
        return "0"
    return f"{value:,.0f}" if magnitude >= 10 else f"{value:.3g}"


def _sample_rows(count: int) -> np.ndarray:
    if count <= MAX_POINTS_PER_SERIES:
        return np.arange(count)
    return np.sort(np.random.default_rng(0).choice(count, size=MAX_POINTS_PER_SERIES, replace=False))


def _readable_axes(ax: Any, *, x_numbers: bool = True, y_numbers: bool = True) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for numbers, axis in ((x_numbers, ax.xaxis), (y_numbers, ax.yaxis)):
        if numbers:
            axis.set_major_formatter(FuncFormatter(human_number))
            axis.set_major_locator(MaxNLocator(nbins=6))
    ax.grid(True, color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)


def _shown(count: int) -> str:
    return f" — {MAX_POINTS_PER_SERIES:,} of {count:,} rows shown" if count > MAX_POINTS_PER_SERIES else ""


def build_figures(actual: np.ndarray, predicted: np.ndarray, importance: dict[str, float], target: str,
                  champion: ChampionPredictions | None = None) -> dict[str, Any]:
    """The three figures by file name, not yet saved (tests read their artists and legends).

    With a `champion` scored on the same rows, predicted-vs-actual and the residuals show it beside the
    challenger, each labelled with its RMSE, so the approver sees where the new model is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    rows = _sample_rows(len(actual))
    challenger_rmse = float(np.sqrt(np.mean((predicted - actual) ** 2)))
    challenger_label = f"challenger (RMSE {human_number(challenger_rmse)})"
    series = [(predicted, challenger_label, CHALLENGER_COLOR)]
    if champion is not None:
        series.append((np.asarray(champion.predicted, dtype=float), champion.label, CHAMPION_COLOR))
    figures: dict[str, Any] = {}

    # Few rows get bigger, bolder marks; many get small, light ones so the overlap shows density.
    marker = {"s": float(np.clip(4000 / max(len(rows), 1), 5, 24)), "alpha": 0.45 if len(rows) > 1000 else 0.7,
              "linewidths": 0}
    fig, ax = plt.subplots(figsize=(6.4, 6))
    for values, label, color in series:
        ax.scatter(actual[rows], values[rows], color=color, label=label, **marker)
    everything = np.concatenate([actual, *[values for values, _, _ in series]])
    low, high = float(everything.min()), float(everything.max())
    ax.plot([low, high], [low, high], color=REFERENCE_COLOR, linewidth=1, linestyle="--",
            label="perfect prediction")
    ax.set(xlabel=f"actual {target}", ylabel=f"predicted {target}",
           title=f"Predicted vs actual {target} (test set{_shown(len(actual))})")
    _readable_axes(ax)
    ax.legend(loc="upper left", markerscale=3, framealpha=0.9)
    fig.tight_layout()
    figures[PLOTS[0]] = fig

    # One above the other: the email and the confirmation page are about 600 px wide.
    fig, (left, right) = plt.subplots(2, 1, figsize=(6.4, 8.4))
    all_residuals = [actual - values for values, _, _ in series]
    for (values, label, color), residuals in zip(series, all_residuals):
        left.scatter(values[rows], residuals[rows], color=color, label=label, **marker)
    left.axhline(0, color=REFERENCE_COLOR, linewidth=1, linestyle="--", label="no error")
    left.set(xlabel=f"predicted {target}", ylabel=f"actual − predicted {target}",
             title=f"Residuals{_shown(len(actual))}")
    _readable_axes(left)
    left.legend(loc="upper left", markerscale=3, framealpha=0.9, fontsize="small")
    edges = np.histogram_bin_edges(np.concatenate(all_residuals), bins=40)
    for (_, label, color), residuals in zip(series, all_residuals):
        right.hist(residuals, bins=edges, color=color, alpha=0.45, label=label)
    right.set(xlabel=f"actual − predicted {target}", ylabel="test rows", title="Residual distribution")
    _readable_axes(right)
    right.legend(loc="upper left", framealpha=0.9, fontsize="small")
    fig.tight_layout()
    figures[PLOTS[1]] = fig

    ordered = sorted(importance.items(), key=lambda item: item[1])
    fig, ax = plt.subplots(figsize=(7, max(3, 0.4 * len(ordered) + 1)))
    ax.barh([name for name, _ in ordered], [value for _, value in ordered], color=CHALLENGER_COLOR,
            label=f"challenger, predicting {target}")
    from matplotlib.ticker import PercentFormatter

    ax.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
    ax.grid(True, axis="x", color="#d0d7de", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set(xlabel="share of the model's total gain", ylabel="feature",
           title=f"Feature importance (what drives predicted {target})")
    ax.legend(loc="lower right", framealpha=0.9)
    fig.tight_layout()
    figures[PLOTS[2]] = fig
    return figures


def write_plots(out_dir: Path, actual: np.ndarray, predicted: np.ndarray, importance: dict[str, float],
                target: str, champion: ChampionPredictions | None = None) -> list[str]:
    import matplotlib.pyplot as plt

    figures = build_figures(actual, predicted, importance, target, champion)
    for name, fig in figures.items():
        fig.savefig(out_dir / name, dpi=PLOT_DPI)
        plt.close(fig)
    return list(figures)


# --------------------------------------------------------------------------- step
def read_test_split(directory: Path) -> pd.DataFrame:
    return common.read_parquet_dir(directory, "the test split")


def find_model_archive(directory: Path) -> Path:
    archives = sorted(directory.glob("*.tar.gz")) if directory.is_dir() else []
    if not archives:
        raise common.JobFailure(f"no model.tar.gz under {directory}")
    return archives[0]


SMOKE_SAMPLE_ROWS = 20


def smoke_sample(model: ServingModel, test: pd.DataFrame, predicted: np.ndarray) -> pd.DataFrame:
    """A few test rows in RAW units with the prediction this step made for each.

    The deployment's smoke test sends these raw features to the endpoint and expects the same
    predictions back: that checks the serving container, the persisted scaler and the artifact
    together, with nothing but the standard library on the Lambda side."""
    rows = min(SMOKE_SAMPLE_ROWS, len(test))
    head = test.iloc[:rows]
    sample = model.preprocessor.unscale_frame(head[model.feature_order])
    sample[model.target] = head[model.target].to_numpy(dtype=float)
    # A feature may itself be called `prediction`: the column gets a name no column has.
    sample[prediction_column_for([*model.feature_order, model.target])] = np.asarray(predicted[:rows], dtype=float)
    return sample.reset_index(drop=True)


def copy_baseline(out_dir: Path) -> Path | None:
    """Puts Preprocess's `baseline_statistics.json` (input `preprocessor`) next to evaluation.json,
    where RegisterModel registers it as the package's drift baseline; None when the step has no such
    input (a definition without it)."""
    source = common.processing_input("preprocessor") / BASELINE_FILE
    if not source.parent.is_dir():
        return None
    if not source.is_file():
        raise common.JobFailure(f"the preprocessor input {source.parent} holds no {BASELINE_FILE}")
    target = out_dir / BASELINE_FILE
    shutil.copyfile(source, target)
    return target


def evaluate(
    target_column: str,
    model_package_group_name: str | None,
    rmse_threshold: float,
    champion_tolerance: float,
    sagemaker: Any = None,
    s3: Any = None,
) -> dict[str, Any]:
    """Runs the step; returns the evaluation document it wrote."""
    if champion_tolerance < 0:
        raise common.JobFailure(f"champion tolerance must be >= 0, got {champion_tolerance}")
    out_dir = common.processing_output("evaluation")
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        workdir = Path(tmp)
        try:
            challenger = load_model_dir(
                extract_model_tar(find_model_archive(common.processing_input("model")), workdir / "model")
            )
        except ModelArtifactError as err:
            raise common.JobFailure(f"the trained model cannot be loaded: {err}") from None
        if challenger.target != target_column:
            raise common.JobFailure(
                f"the model predicts {challenger.target!r}, the pipeline evaluates {target_column!r}"
            )
        test = read_test_split(common.processing_input("test"))
        missing = [c for c in [*challenger.feature_order, target_column] if c not in test.columns]
        if missing:
            raise common.JobFailure(f"the test split lacks the columns {', '.join(missing)}")
        actual = test[target_column].to_numpy(dtype=float)
        predicted = challenger.predict_scaled(test[challenger.feature_order])
        metrics = regression_metrics(actual, predicted)

        champion = champion_predictions = None
        if model_package_group_name:
            sagemaker = sagemaker or boto3.client("sagemaker")
            package = latest_approved_package(sagemaker, model_package_group_name)
            if package is not None:
                champion, champion_predictions = score_champion(challenger, test[challenger.feature_order], actual, package,
                                          s3 or boto3.client("s3"), workdir)

        sample = smoke_sample(challenger, test, predicted)

    importance = feature_importance(challenger)
    copy_baseline(out_dir)
    sample.to_csv(out_dir / SMOKE_SAMPLE_FILE, index=False)
    plots = write_plots(out_dir, actual, predicted, importance, target_column, champion_predictions)
    comparable = bool(champion and champion.comparable and champion.rmse is not None)
    limit = champion.rmse * (1 + champion_tolerance) if comparable else NO_CHAMPION_LIMIT
    rmse = metrics.rmse.value
    report = EvaluationReport(
        regression_metrics=metrics,
        rows=EvaluatedRows(test=int(len(test)), champion_scored=int(len(test)) if comparable else 0),
        feature_importance=importance,
        champion=champion,
        gate=Gate(
            rmse_threshold=float(rmse_threshold),
            champion_tolerance=float(champion_tolerance),
            champion_rmse_limit=float(limit),
            passes_threshold=rmse <= rmse_threshold,
            passes_champion=rmse <= limit,
        ),
        target=target_column,
        plots=plots,
        smoke_sample=SMOKE_SAMPLE_FILE,
        smoke_prediction_column=prediction_column_for([*challenger.feature_order, target_column]),
        missing_share=challenger.preprocessor.extra.get("missing_share"),
        dropped_rows=challenger.preprocessor.extra.get("dropped_rows"),
    )
    document = report.to_json()
    (out_dir / EVALUATION_FILE).write_text(json.dumps(document, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    log.info("test rmse %.2f (threshold %.2f, champion limit %.4g)", rmse, rmse_threshold, limit)
    return document


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--target-column", required=True)
    parser.add_argument("--model-package-group-name", default="")
    parser.add_argument("--rmse-threshold", type=float, default=15000.0)
    parser.add_argument("--champion-tolerance", type=float, default=0.05)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    common.setup_logging()
    args = parse_args(argv)
    try:
        # The evaluation itself needs no Ray; on several hosts it runs once, on the head, while the
        # other hosts wait for it like every job's workers (and exit 0 without writing anything).
        with ray_cluster.head_only():
            evaluate(args.target_column, args.model_package_group_name or None, args.rmse_threshold,
                     args.champion_tolerance)
    except common.JobFailure as failure:
        common.fail(str(failure), kind="processing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
