"""Synthetic housing data shaped like the reference sample's `house_pricing.csv`.

PRICE = 150*SQUARE_FEET + 10000*NUM_BEDROOMS + 15000*NUM_BATHROOMS + 15000*LOT_ACRES
        + 15000*GARAGE_SPACES - 5000*(2019 - YEAR_BUILT)   (truncated to int; FRONT_PORCH, DECK unused)

Seeded and vectorised, so any row count is reproducible and a million rows take a second or two.
`noise_std` adds Gaussian noise to the price (before truncation) for a less trivial target.

    python -m local.cli.datagen --rows 10000 --seed 7 --out data.csv [--noise-std 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = [
    "PRICE",
    "YEAR_BUILT",
    "SQUARE_FEET",
    "NUM_BEDROOMS",
    "NUM_BATHROOMS",
    "LOT_ACRES",
    "GARAGE_SPACES",
    "FRONT_PORCH",
    "DECK",
]
TARGET = "PRICE"


def generate_housing(rows: int, seed: int, noise_std: float = 0.0) -> pd.DataFrame:
    """Returns `rows` synthetic houses with the reference header and price formula."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    year_built = np.minimum(2019, rng.normal(1995, 10, rows).astype(np.int64))
    square_feet = rng.normal(3000, 750, rows)
    num_bedrooms = rng.integers(2, 7, rows)
    num_bathrooms = rng.integers(2, 7, rows) / 2
    lot_acres = np.round(rng.normal(1.0, 0.25, rows), 2)
    garage_spaces = rng.integers(0, 4, rows)
    front_porch = rng.integers(0, 2, rows)
    deck = rng.integers(0, 2, rows)
    price = (
        150 * square_feet
        + 10000 * num_bedrooms
        + 15000 * num_bathrooms
        + 15000 * lot_acres
        + 15000 * garage_spaces
        - 5000 * (2019 - year_built)
    )
    if noise_std > 0:
        price = price + rng.normal(0.0, noise_std, rows)
    return pd.DataFrame(
        {
            "PRICE": price.astype(np.int64),  # int() truncation toward zero, as the reference
            "YEAR_BUILT": year_built,
            "SQUARE_FEET": square_feet,
            "NUM_BEDROOMS": num_bedrooms,
            "NUM_BATHROOMS": num_bathrooms,
            "LOT_ACRES": lot_acres,
            "GARAGE_SPACES": garage_spaces,
            "FRONT_PORCH": front_porch,
            "DECK": deck,
        },
        columns=COLUMNS,
    )


def write_housing_csv(path: str | Path, rows: int, seed: int, noise_std: float = 0.0) -> Path:
    """Generates and writes the CSV (header, no index); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    generate_housing(rows, seed, noise_std).to_csv(path, index=False)
    return path


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=10000, help="number of rows (default 10000)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument("--noise-std", type=float, default=0.0, help="std of Gaussian price noise (default 0)")
    parser.add_argument("--out", required=True, help="CSV file to write ('-' for stdout)")


def cmd_generate(args: argparse.Namespace) -> int:
    if args.rows < 0 or args.noise_std < 0:
        print("mlops data generate: --rows and --noise-std must be >= 0", file=sys.stderr)
        return 2
    if args.out == "-":
        generate_housing(args.rows, args.seed, args.noise_std).to_csv(sys.stdout, index=False)
    else:
        write_housing_csv(args.out, args.rows, args.seed, args.noise_std)
    return 0


def register(subparsers) -> None:
    """`mlops data generate`: the synthetic housing CSV of the reference sample."""
    group = subparsers.add_parser("data", help="datasets for trying the system")
    commands = group.add_subparsers(dest="data_command", required=True)
    generate = commands.add_parser("generate", help=__doc__.splitlines()[0])
    _add_options(generate)
    generate.set_defaults(func=cmd_generate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.cli.datagen", description=__doc__.splitlines()[0])
    _add_options(parser)
    return cmd_generate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
