"""The step cache of the local SageMaker Pipelines service: `CacheConfig` honoured across executions
and restarts (a JSON file in the work dir), keyed like AWS keys it (see `definition.cache_key`)."""
from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path


class StepCache:
    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._entries: list[dict] = self._load()

    def _load(self) -> list[dict]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return []

    def lookup(self, key: str, expire_after: timedelta | None) -> dict | None:
        """The newest entry for `key` that has not expired, or None."""
        now = time.time()
        with self._lock:
            for entry in reversed(self._entries):
                if entry["key"] != key:
                    continue
                if expire_after is not None and now - entry["time"] > expire_after.total_seconds():
                    continue
                return entry
        return None

    def store(self, key: str, execution_arn: str, step: str, properties: dict, metadata: dict) -> None:
        with self._lock:
            self._entries.append({"key": key, "time": time.time(), "execution_arn": execution_arn, "step": step,
                                  "properties": properties, "metadata": metadata})
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._entries, default=str), encoding="utf-8")
            tmp.replace(self.path)
