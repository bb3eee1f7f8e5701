"""The gateway the pipeline tests run the real definition against: a freshly reset moto behind
it, the Feature Store runtime routed in, and every boto3 client of the test pointed at it."""
from __future__ import annotations

import contextlib
import os
import urllib.request
from typing import Iterator

from local.aws.featurestore_runtime.service import FeatureStoreRuntimeApp
from local.aws.gateway import LocalGateway


@contextlib.contextmanager
def pipeline_gateway() -> Iterator[LocalGateway]:
    saved = os.environ.get("AWS_ENDPOINT_URL")
    with LocalGateway() as gateway:
        os.environ["AWS_ENDPOINT_URL"] = gateway.url
        urllib.request.urlopen(urllib.request.Request(f"{gateway.url}/moto-api/reset", method="POST")).read()
        featurestore = FeatureStoreRuntimeApp(gateway.url, replication_delay_seconds=0.0)
        gateway.route_path(r"/FeatureGroup/.+", featurestore)
        gateway.route_path(r"/BatchGetRecord", featurestore)
        try:
            yield gateway
        finally:
            featurestore.close()
            if saved is None:
                os.environ.pop("AWS_ENDPOINT_URL", None)
            else:
                os.environ["AWS_ENDPOINT_URL"] = saved
