"""`<state dir>/cloud.json`: how other processes find a running local cloud (DESIGN §4).

The running cloud writes it once it is up and removes it when it stops; `find_running_cloud` only
trusts a file whose process is alive and whose gateway answers. Besides the endpoints and the
administrator's credentials it names `console_url`, the read-only console (local/console).
"""
from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

CLOUD_FILE = "cloud.json"


def cloud_file(state_dir: str | Path) -> Path:
    return Path(state_dir) / CLOUD_FILE


def write_cloud_file(state_dir: str | Path, info: dict) -> Path:
    path = cloud_file(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(path)  # readers never see half a file
    return path


def remove_cloud_file(state_dir: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        cloud_file(state_dir).unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_running_cloud(state_dir: str | Path = ".mlops-local") -> dict | None:
    """The `cloud.json` of a live local cloud using `state_dir`, or None."""
    try:
        info = json.loads(cloud_file(state_dir).read_text())
    except (FileNotFoundError, ValueError):
        return None
    if not _pid_alive(int(info.get("pid", -1))):
        return None
    try:
        urllib.request.urlopen(info["endpoint_url"] + "/", timeout=5).read()
    except urllib.error.HTTPError:
        pass  # it answered: alive
    except Exception:
        return None
    return info
