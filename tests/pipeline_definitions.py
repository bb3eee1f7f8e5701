"""Building a pipeline definition the way the stack's definitions are built: offline."""
from __future__ import annotations

import socket
from typing import Callable


def built_offline(definition_json: Callable[[], str]) -> str:
    """`definition_json()`'s text, built with every outbound connection refused; fails if the build
    even tried one (an SDK that swallowed the refusal would otherwise go unnoticed)."""
    original = socket.socket.connect
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"network call while building the pipeline: {address}")

    socket.socket.connect = refuse
    try:
        text = definition_json()
    finally:
        socket.socket.connect = original
    assert attempts == [], f"building the pipeline tried to connect to {attempts}"
    return text
