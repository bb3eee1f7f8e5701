"""moto's Step Functions runner calls services with the state machine's role, as Step Functions does.

moto's ASL runner (the one the local face executes state machines with) builds its service clients
with fixed keys (`moto.stepfunctions.parser.asl.utils.boto_client.boto_client_for`). Here every
execution's worker thread remembers its execution's role, and the runner's clients are rebuilt with
a session of that role (assumed as states.amazonaws.com, so the trust policy is checked): the strict
face then judges each task's call against the state machine role's policies — this traffic and only
this traffic. The runner's own threads (program, task timeouts, parallel branches, map iterations) inherit the
role of the thread that starts them; a thread that knows no execution fails loudly rather than act
with another identity.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import threading
from typing import Any

_current = threading.local()
_state: dict[str, Any] = {"identities": None, "installed": False}


def use(identities) -> None:
    """Runner calls from now on act as sessions from `identities` (local.aws.identities.Identities);
    None gives moto's runner its own clients back."""
    _state["identities"] = identities
    if identities is not None:
        install()


def install() -> None:
    if _state["installed"]:
        return
    from moto.stepfunctions.parser.backend import execution_worker
    from moto.stepfunctions.parser.asl.utils import boto_client

    original_logic = execution_worker.ExecutionWorker._execution_logic

    def execution_logic(self) -> None:
        _current.role_arn = self._evaluation_details.aws_execution_details.role_arn
        try:
            original_logic(self)
        finally:
            _current.role_arn = None

    execution_worker.ExecutionWorker._execution_logic = execution_logic
    original_client = boto_client.boto_client_for

    def boto_client_for(region: str, service: str, state_credentials: Any = None):
        client = original_client(region, service, state_credentials)
        identities = _state["identities"]
        if identities is None:
            return client
        role_arn = getattr(_current, "role_arn", None)
        if not role_arn:
            raise RuntimeError("a Step Functions task ran outside an execution the local face knows; "
                               "it has no role to act with")
        import boto3

        credentials = identities.role_credentials(role_arn, "states.amazonaws.com", "stepfunctions")
        return boto3.client(service, region_name=region, endpoint_url=client.meta.endpoint_url,
                            config=client.meta.config, **credentials.client_kwargs())

    # The task modules import the function by name: replace it where it is used.
    import moto.stepfunctions.parser.asl as asl

    for module in pkgutil.walk_packages(asl.__path__, prefix=asl.__name__ + "."):
        try:
            importlib.import_module(module.name)
        except ImportError:
            continue
    threading_with_role = _ThreadingWithRole()
    for name, module in list(sys.modules.items()):
        if not name.startswith("moto.stepfunctions.parser"):
            continue
        if getattr(module, "boto_client_for", None) is original_client:
            module.boto_client_for = boto_client_for
        # The runner evaluates the program, each task state (for its timeout) and each branch in
        # threads of its own: they act for the execution that started them.
        if getattr(module, "threading", None) is threading:
            module.threading = threading_with_role
        if getattr(module, "Thread", None) is threading.Thread:
            module.Thread = ThreadWithRole
    _state["installed"] = True


class ThreadWithRole(threading.Thread):
    """A thread that acts with the role of the execution of the thread that created it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._role_arn = getattr(_current, "role_arn", None)

    def run(self) -> None:
        _current.role_arn = self._role_arn
        super().run()


class _ThreadingWithRole:
    """The `threading` module as the runner's modules see it: the same, but for `Thread`."""

    Thread = ThreadWithRole

    def __getattr__(self, name: str):
        return getattr(threading, name)
