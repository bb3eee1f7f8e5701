"""The synthetic housing generator: reference header, exact price formula, seeded, fast."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from local.cli.datagen import COLUMNS, generate_housing


def reference_price(frame: pd.DataFrame) -> np.ndarray:
    return (
        150 * frame.SQUARE_FEET
        + 10000 * frame.NUM_BEDROOMS
        + 15000 * frame.NUM_BATHROOMS
        + 15000 * frame.LOT_ACRES
        + 15000 * frame.GARAGE_SPACES
        - 5000 * (2019 - frame.YEAR_BUILT)
    ).astype(np.int64).to_numpy()


def test_header_ranges_and_formula():
    frame = generate_housing(5000, seed=7)
    assert list(frame.columns) == COLUMNS and len(frame) == 5000
    assert (reference_price(frame) == frame.PRICE.to_numpy()).all()
    assert frame.NUM_BEDROOMS.between(2, 6).all() and set(frame.NUM_BEDROOMS) == {2, 3, 4, 5, 6}
    assert set(frame.NUM_BATHROOMS) == {1.0, 1.5, 2.0, 2.5, 3.0}
    assert set(frame.GARAGE_SPACES) == {0, 1, 2, 3}
    assert set(frame.FRONT_PORCH) == {0, 1} and set(frame.DECK) == {0, 1}
    assert frame.YEAR_BUILT.max() <= 2019
    assert (frame.LOT_ACRES.round(2) == frame.LOT_ACRES).all()
    assert 2900 < frame.SQUARE_FEET.mean() < 3100 and 700 < frame.SQUARE_FEET.std() < 800


def test_seeded_and_noise_is_optional():
    assert generate_housing(100, seed=1).equals(generate_housing(100, seed=1))
    assert not generate_housing(100, seed=1).equals(generate_housing(100, seed=2))
    noisy = generate_housing(2000, seed=1, noise_std=5000.0)
    residual = noisy.PRICE.to_numpy() - reference_price(noisy)
    assert 4000 < residual.std() < 6000
    assert generate_housing(0, seed=1).empty
    with pytest.raises(ValueError):
        generate_housing(10, seed=1, noise_std=-1)


def test_a_million_rows_is_fast():
    started = time.perf_counter()
    frame = generate_housing(1_000_000, seed=3)
    assert len(frame) == 1_000_000
    assert time.perf_counter() - started < 5


def test_cli_writes_the_csv(tmp_path):
    out = tmp_path / "houses.csv"
    subprocess.run(
        [sys.executable, "-m", "local.cli.datagen", "--rows", "250", "--seed", "7", "--out", str(out), "--noise-std", "0"],
        check=True,
    )
    written = pd.read_csv(out)
    assert list(written.columns) == COLUMNS and len(written) == 250
    assert (reference_price(written) == written.PRICE.to_numpy()).all()
