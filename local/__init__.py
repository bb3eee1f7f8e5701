"""The local runtime: the AWS pieces moto lacks, and the `mlops` CLI.

The local runtime uses the project's Lambda layer (`functions/shared`, package `mlops_shared`) the
way a Lambda does (`/opt/python` is on a function's path): it puts the layer on `sys.path`.
"""
import sys
from pathlib import Path

LAYER_DIR = Path(__file__).resolve().parents[1] / "functions" / "shared"
if str(LAYER_DIR) not in sys.path:
    sys.path.append(str(LAYER_DIR))
