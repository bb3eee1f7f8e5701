"""Performance benchmarks of the project against plain baselines measured in the same run.

    python -m bench [--only P1,P3] [--quick] [--output bench/RESULTS.md]

Each benchmark (`bench/p*_*.py`) runs in its own process and returns `Row`s (see `bench.harness`);
the harness prints them as they come and writes a Markdown report with the machine it ran on.
"""
