"""What the handlers' Powertools tracer patches and the namespace their metrics go to.

Its own module, standard library only: handlers that need nothing else of `mlops_shared.config`
(the lineage recorder, the approval functions) import only this at cold start (bench P5). `config`
names both too.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

# What the X-Ray tracer patches: botocore, the client every AWS call of the handlers goes through.
# Powertools' default (X-Ray's patch_all) imports each supported library that is installed (requests,
# sqlite3, ...) at cold start just to patch it, and no handler uses them; httplib, which the Slack
# calls go through, is not in that default either, so the traces stay the same.
TRACED_MODULES = ("botocore",)

# The custom metrics' namespace (template Globals: POWERTOOLS_METRICS_NAMESPACE; the dashboard and
# alarms read it). A handler run without it (a test harness, a hand-made environment) still counts,
# instead of Powertools failing the invocation at the metrics flush.
DEFAULT_METRICS_NAMESPACE = "RaySageMakerMLOps"


def metrics_namespace(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("POWERTOOLS_METRICS_NAMESPACE", "").strip() or DEFAULT_METRICS_NAMESPACE
