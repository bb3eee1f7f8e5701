"""Runs Lambda handlers from `functions/` the way Lambda does, without Docker.

Each function gets warm worker subprocesses of its own (like Lambda execution environments):
Powertools and module-level clients read the environment at import time, so two functions must
never share a process. A worker imports the handler once, then serves invocations one at a time,
JSON in over stdin and JSON out over a dedicated pipe (the handler's own stdout/stderr go to the
function's log file). The parent enforces the function's timeout, kills a worker that exceeds it,
and shapes errors like Lambda (`FunctionError: Unhandled`, `errorMessage`/`errorType`).

What a worker can import is what the function ships (`local.aws.lambda_packages`): the interpreter
of the function's `Runtime` with the runtime's SDK, its code and requirements, its layers; a handler
importing anything else fails with `Runtime.ImportModuleError`, as on AWS. Its memory is the
template's `MemorySize`: the parent watches the worker's peak resident memory (the kernel's VmHWM,
so a peak between two looks is not missed) and kills a worker that went over it, which the caller
sees as Lambda reports it (`Runtime.ExitError`, "signal: killed"). Address-space limits
(RLIMIT_AS) are no substitute: they count reserved, untouched memory (a Python process with eight
idle threads reserves ~650 MB of address space for ~55 MB resident), so they fail healthy handlers
and let none of Lambda's own behaviour through.

Logs go where Lambda puts them: each worker (execution environment) has its own CloudWatch Logs
stream `YYYY/MM/DD/[$LATEST]<32 hex>` in `/aws/lambda/<function name>`, written with the function's
own role as the Lambda service does (SAM's AWSLambdaBasicExecutionRole grants it), with Lambda's
START/END/REPORT lines around each invocation. The worker's output is read by the parent, which
appends it to the function's local log file too (`<log dir>/<function>.log`).

`LambdaRuntime.install(gateway)` serves `POST /2015-03-31/functions/{name}/invocations`, so boto3
`lambda.invoke` and Step Functions Lambda tasks (which moto sends back to the gateway) run real code.
"""
from __future__ import annotations

import json
import logging
import math
import os
import select
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from local.aws.lambda_packages import FunctionPackage, PackageBuilder
# PutLogEvents' limits (events and bytes per call, bytes per event), kept in one place.
from local.aws.sagemaker_pipelines.job_logs import _batches, _event_message
from local.aws.stack.model import ACCOUNT_ID, REGION, FunctionSpec, function_name_from

log = logging.getLogger(__name__)

INIT_TIMEOUT_SECONDS = 120.0  # generous: importing boto3 + Powertools on a busy 2-core machine
MEMORY_CHECK_SECONDS = 0.02  # how often a busy worker's peak memory is looked at
INVOKE_PATH = r"/2015-03-31/functions/(?P<name>[^/]+)/invocations"
LOG_FLUSH_SECONDS = 1.0  # how long a line may wait for its PutLogEvents while an invocation runs

# The worker: a tiny Lambda runtime loop. Runs with `python -c`, cwd = the function's code dir.
_WORKER = r'''
import importlib, json, math, os, resource, sys, time, traceback
init_started = time.monotonic()
out = os.fdopen(int(sys.argv[2]), "w", buffering=1)
sys.path.insert(0, os.getcwd())

class LambdaContext:
    def __init__(self, request_id, deadline_ms):
        self.aws_request_id = request_id
        self._deadline_ms = deadline_ms
        self.function_name = os.environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = os.environ["AWS_LAMBDA_FUNCTION_VERSION"]
        self.invoked_function_arn = os.environ["LOCAL_LAMBDA_FUNCTION_ARN"]
        self.memory_limit_in_mb = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.log_group_name = os.environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self.tenant_id = None
    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

def error(exc, error_type=None):
    return {"errorMessage": str(exc), "errorType": error_type or type(exc).__name__,
            "requestId": "", "stackTrace": traceback.format_exception(exc)[1:]}

module_name, function_name = sys.argv[1].rsplit(".", 1)
try:
    handler = getattr(importlib.import_module(module_name), function_name)
except Exception as exc:
    if isinstance(exc, ImportError):
        failure = error(exc, "Runtime.ImportModuleError")
        failure["errorMessage"] = f"Unable to import module '{module_name}': {exc}"
    elif isinstance(exc, AttributeError):
        failure = error(exc, "Runtime.HandlerNotFound")
        failure["errorMessage"] = f"Handler '{function_name}' missing on module '{module_name}'"
    else:
        failure = error(exc)
    traceback.print_exc()
    out.write(json.dumps({"init_error": failure}) + "\n")
    sys.exit(1)
out.write(json.dumps({"ready": True}) + "\n")
init_ms = (time.monotonic() - init_started) * 1000
memory_size = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
for line in sys.stdin:
    request = json.loads(line)
    request_id = request["request_id"]
    context = LambdaContext(request_id, request["deadline_ms"])
    # Lambda's own lines around an invocation, in the same stream as the handler's output.
    print(f"START RequestId: {request_id} Version: {os.environ['AWS_LAMBDA_FUNCTION_VERSION']}", flush=True)
    started = time.monotonic()
    try:
        result = handler(request["event"], context)
        try:
            message = {"result": result, "request_id": request["request_id"]}
            text = json.dumps(message)
        except (TypeError, ValueError) as exc:
            text = json.dumps({"error": error(exc, "Runtime.MarshalError"), "request_id": request["request_id"]})
    except Exception as exc:
        traceback.print_exc()
        text = json.dumps({"error": error(exc), "request_id": request["request_id"]})
    sys.stdout.flush(); sys.stderr.flush()
    duration_ms = (time.monotonic() - started) * 1000
    used_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    report = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
              f"{math.ceil(duration_ms)} ms\tMemory Size: {memory_size} MB\tMax Memory Used: {used_mb} MB\t")
    if init_ms is not None:
        report += f"Init Duration: {init_ms:.2f} ms\t"
        init_ms = None
    print(f"END RequestId: {request_id}", flush=True)
    print(report, flush=True)
    out.write(text + "\n")
'''


@dataclass
class InvocationResult:
    payload: Any  # the handler's return value, or Lambda's error document
    function_error: str | None = None  # "Unhandled" when the handler failed
    request_id: str = ""
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.function_error is None

    def payload_bytes(self) -> bytes:
        return json.dumps(self.payload).encode()


class FunctionNotFound(LookupError):
    pass


class LambdaLogStream:
    """One execution environment's CloudWatch Logs stream, as the Lambda service writes it.

    Lines are put in the order the worker wrote them, each with the time it was read, in batches
    within PutLogEvents' limits (`job_logs`); a REPORT line (an invocation ended) flushes at once,
    otherwise every second. Writing logs never fails an invocation: a CloudWatch error is logged
    once and the local log file still has everything.
    """

    def __init__(self, logs_factory: Callable[[], Any], function_name: str, started: float | None = None,
                 log_group: str | None = None):
        self.logs_factory = logs_factory
        self.log_group = log_group or f"/aws/lambda/{function_name}"  # the function's LoggingConfig.LogGroup
        when = time.gmtime(time.time() if started is None else started)
        self.stream = f"{time.strftime('%Y/%m/%d', when)}/[$LATEST]{uuid.uuid4().hex}"
        self._pending: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._client: Any = None
        self._broken = False
        self._thread = threading.Thread(target=self._run, name=f"lambda-logs-{function_name}", daemon=True)
        self._thread.start()

    def add(self, line: bytes) -> None:
        message = _event_message(line.rstrip(b"\n"))
        if not message.strip():
            return
        with self._lock:
            self._pending.append((int(time.time() * 1000), message))
        if message.startswith("REPORT RequestId:"):
            self._wake.set()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(LOG_FLUSH_SECONDS)
            self._wake.clear()
            self._flush()
        self._flush()

    def _open(self) -> bool:
        if self._client is None and not self._broken:
            try:
                client = self.logs_factory()
                for call, kwargs in ((client.create_log_group, {"logGroupName": self.log_group}),
                                     (client.create_log_stream, {"logGroupName": self.log_group,
                                                                 "logStreamName": self.stream})):
                    try:
                        call(**kwargs)
                    except client.exceptions.ResourceAlreadyExistsException:
                        pass
                self._client = client
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.warning("cannot create the log stream %s %s (%s); the function's log stays in its local file",
                            self.log_group, self.stream, exc)
                self._broken = True
        return self._client is not None

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or not self._open():
            return
        start = 0
        try:
            for batch in _batches([message for _, message in pending]):
                log_events = [{"timestamp": timestamp, "message": message}
                              for timestamp, message in pending[start:start + len(batch)]]
                start += len(batch)
                self._client.put_log_events(logGroupName=self.log_group, logStreamName=self.stream,
                                            logEvents=log_events)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("cannot put the function's log into %s %s (%s); it stays in its local file",
                        self.log_group, self.stream, exc)
            self._broken, self._client = True, None


class _Worker:
    """One warm execution environment of one function."""

    def __init__(self, spec: FunctionSpec, env: dict[str, str], log_file: Path | None, interpreter: Path,
                 log_stream: LambdaLogStream | None = None):
        read_fd, write_fd = os.pipe()
        self.memory_limit_kb = spec.memory_size * 1024
        self.out_of_memory = False
        self.log_handle = open(log_file, "ab", buffering=0) if log_file else None
        self.log_stream = log_stream
        # What Lambda writes itself when it ends an invocation the runtime could not (timeout, crash).
        self.trailer: list[str] = []
        env = dict(env)
        if log_stream is not None:
            env["AWS_LAMBDA_LOG_STREAM_NAME"] = log_stream.stream
        self.process = subprocess.Popen(
            # The log file's name rides along in the command line (unused by the worker), so a
            # process listing tells which cloud's state a worker belongs to.
            [str(interpreter), "-u", "-c", _WORKER, spec.handler, str(write_fd), str(log_file or "")],
            cwd=spec.code_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(write_fd,),
            start_new_session=True,  # Ctrl-C in the foreground CLI reaches the parent only
        )
        os.close(write_fd)
        self._pump = threading.Thread(target=self._copy_output, name=f"lambda-output-{spec.name}", daemon=True)
        self._pump.start()
        self._out = os.fdopen(read_fd, "r")
        self._buffer = ""
        self.init_error: dict | None = None
        message = self._read_message(time.monotonic() + INIT_TIMEOUT_SECONDS)
        if message is None and self.out_of_memory:
            self.init_error = {"errorMessage": "Error: Runtime exited with error: signal: killed",
                               "errorType": "Runtime.ExitError"}
        elif message is None:
            self.init_error = {"errorMessage": "Init timed out or the runtime exited during init",
                               "errorType": "Runtime.ExitError"}
        elif "init_error" in message:
            self.init_error = message["init_error"]

    def _copy_output(self) -> None:
        """The worker's stdout and stderr, line by line, into its local file and its log stream."""
        for line in iter(self.process.stdout.readline, b""):
            self._write_log_line(line)

    def _write_log_line(self, line: bytes) -> None:
        if self.log_handle is not None:
            self.log_handle.write(line)
        if self.log_stream is not None:
            self.log_stream.add(line)

    def _read_message(self, deadline: float) -> dict | None:
        """Next JSON line from the worker, or None on timeout/exit (also when it was killed for
        going over its memory: `out_of_memory`)."""
        fd = self._out.fileno()
        while "\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], min(remaining, MEMORY_CHECK_SECONDS))
            if self._over_memory():
                self.out_of_memory = True
                self.process.kill()
                self.process.wait(timeout=5)
                return None
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk.decode()
        line, self._buffer = self._buffer.split("\n", 1)
        return json.loads(line)

    def invoke(self, event: Any, request_id: str, timeout: float) -> dict | None:
        deadline_ms = time.time() * 1000 + timeout * 1000
        self.process.stdin.write((json.dumps({"event": event, "request_id": request_id,
                                              "deadline_ms": deadline_ms}) + "\n").encode())
        self.process.stdin.flush()
        return self._read_message(time.monotonic() + timeout)

    def alive(self) -> bool:
        return self.process.poll() is None

    def peak_memory_kb(self) -> int | None:
        """The worker's peak resident memory so far (Linux /proc), or None once it is gone."""
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def _over_memory(self) -> bool:
        peak = self.peak_memory_kb()
        return peak is not None and peak > self.memory_limit_kb

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
                self.process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=5)
        self._out.close()
        self._pump.join(timeout=5)  # the output the worker wrote before it ended comes first
        if not self._pump.is_alive():
            self.process.stdout.close()
        for line in self.trailer:
            self._write_log_line(line.encode() + b"\n")
        if self.log_stream is not None:
            self.log_stream.close()
        if self.log_handle is not None:
            self.log_handle.close()


class _FunctionPool:
    def __init__(self, spec: FunctionSpec, env: dict[str, str], log_file: Path | None, max_workers: int,
                 interpreter: Path, new_log_stream: Callable[[], LambdaLogStream | None] = lambda: None):
        self.spec, self.env, self.log_file, self.max_workers = spec, env, log_file, max_workers
        self.interpreter = interpreter
        self.new_log_stream = new_log_stream  # one stream per execution environment, as in Lambda
        self.idle: list[_Worker] = []
        self.count = 0
        self.condition = threading.Condition()
        self.closed = False

    def acquire(self) -> _Worker:
        with self.condition:
            while True:
                if self.closed:
                    raise RuntimeError(f"runtime for {self.spec.name} is shut down")
                if self.idle:
                    return self.idle.pop()
                if self.count < self.max_workers:
                    self.count += 1
                    break
                self.condition.wait()
        log_stream = None
        try:
            log_stream = self.new_log_stream()
            return _Worker(self.spec, self.env, self.log_file, self.interpreter, log_stream)
        except Exception:
            if log_stream is not None:
                log_stream.close()
            self.discard(None)
            raise

    def release(self, worker: _Worker) -> None:
        with self.condition:
            if self.closed:
                worker.stop()
                self.count -= 1
            else:
                self.idle.append(worker)
            self.condition.notify()

    def discard(self, worker: _Worker | None) -> None:
        if worker is not None:
            try:
                worker.process.kill()
            except OSError:
                pass
            worker.stop()
        with self.condition:
            self.count -= 1
            self.condition.notify()

    def close(self) -> None:
        with self.condition:
            self.closed = True
            idle, self.idle = self.idle, []
            self.count -= len(idle)
            self.condition.notify_all()
        for worker in idle:
            worker.stop()


def local_aws_environment(endpoint_url: str, region: str = REGION, credentials=None) -> dict[str, str]:
    """What any local client process needs to talk to the local cloud (never real AWS), acting with
    `credentials` (`local.aws.identities.AwsCredentials`; fixed test keys for a bare gateway)."""
    keys = credentials.env() if credentials is not None else {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        **keys,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }


class LambdaRuntime:
    """Invokes the stack's functions; one pool of warm workers per function."""

    def __init__(
        self,
        functions: dict[str, FunctionSpec],
        endpoint_url: str,
        log_dir: str | Path | None = None,
        max_workers_per_function: int = 2,
        timeout_factor: float | None = None,
        dead_letter: Callable[[str, Any, dict], None] | None = None,
        credentials_for: Callable[[FunctionSpec], Any] | None = None,
        packages: PackageBuilder | None = None,
        cloudwatch_logs: bool = False,
    ):
        self.functions = dict(functions)
        self.packages = packages or PackageBuilder()
        self._built: dict[str, FunctionPackage] = {}
        self.endpoint_url = endpoint_url
        self.log_dir = Path(log_dir) if log_dir else None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        self.max_workers = max_workers_per_function
        # Declared timeouts hold; the factor (env MLOPS_LAMBDA_TIMEOUT_FACTOR) is for slow machines.
        self.timeout_factor = timeout_factor or float(os.environ.get("MLOPS_LAMBDA_TIMEOUT_FACTOR", "1"))
        self.dead_letter = dead_letter
        # The function's execution role session (strict face): Lambda hands it to the handler.
        self.credentials_for = credentials_for
        # Each worker's output also goes to CloudWatch Logs (`/aws/lambda/<name>`) through the gateway.
        self.cloudwatch_logs = cloudwatch_logs
        self._pools: dict[str, _FunctionPool] = {}
        self._lock = threading.Lock()
        self._async_threads: set[threading.Thread] = set()
        self._closed = False

    # -- what a function ships -------------------------------------------------------------------
    def package_for(self, spec: FunctionSpec) -> FunctionPackage:
        """The function's interpreter and import path, built on first use (cached on disk)."""
        if spec.name not in self._built:
            self._built[spec.name] = self.packages.package(spec.runtime, spec.code_dir, spec.layer_dirs,
                                                           spec.managed_layers)
        return self._built[spec.name]

    def prepare(self) -> None:
        """Builds every function's package now (a missing interpreter fails here, not mid-flow)."""
        for spec in self.functions.values():
            self.package_for(spec)

    # -- environment ----------------------------------------------------------------------------
    def environment_for(self, spec: FunctionSpec) -> dict[str, str]:
        """The whole environment of a worker of `spec`: nothing of this process leaks in but the
        locale and paths a process needs."""
        package = self.package_for(spec)
        env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR") if key in os.environ}
        env.update(local_aws_environment(self.endpoint_url,
                                         credentials=self.credentials_for(spec) if self.credentials_for else None))
        env.update({
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(spec.timeout)),
            "AWS_LAMBDA_LOG_GROUP_NAME": spec.log_group,
            # Each worker names its own stream (LambdaLogStream); this one stands for a worker without.
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d', time.gmtime())}/[$LATEST]{uuid.uuid4().hex}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "LOCAL_LAMBDA_FUNCTION_ARN": spec.arn,
            "PYTHONPATH": os.pathsep.join(str(p) for p in package.python_path),
            "PYTHONDONTWRITEBYTECODE": "1",
        })
        env.update(spec.environment)  # the template's Globals + function Environment win
        return env

    def _pool(self, spec: FunctionSpec) -> _FunctionPool:
        with self._lock:
            if self._closed:
                raise RuntimeError("lambda runtime is shut down")
            if spec.name in self._pools:
                return self._pools[spec.name]
        # Outside the lock: a first build takes seconds and must not hold up the other functions.
        env, interpreter = self.environment_for(spec), self.package_for(spec).interpreter
        log_file = self.log_dir / f"{spec.name}.log" if self.log_dir else None
        with self._lock:
            if self._closed:
                raise RuntimeError("lambda runtime is shut down")
            return self._pools.setdefault(spec.name, _FunctionPool(spec, env, log_file, self.max_workers, interpreter,
                                                                   lambda: self._new_log_stream(spec)))

    def _new_log_stream(self, spec: FunctionSpec) -> LambdaLogStream | None:
        """A new execution environment's log stream, written with the function's role (as Lambda
        writes it: the execution role needs logs:CreateLogStream and logs:PutLogEvents)."""
        if not self.cloudwatch_logs:
            return None
        from local.aws.eventbridge import local_client

        credentials = self.credentials_for(spec) if self.credentials_for else None
        return LambdaLogStream(lambda: local_client("logs", self.endpoint_url, credentials), spec.name,
                               log_group=spec.log_group)

    def spec(self, name_or_arn: str) -> FunctionSpec:
        name = function_name_from(name_or_arn)
        if name in self.functions:
            return self.functions[name]
        for spec in self.functions.values():
            if spec.logical_id == name:
                return spec
        raise FunctionNotFound(f"Function not found: arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}")

    # -- invocation ----------------------------------------------------------------------------
    def invoke(self, name_or_arn: str, event: Any) -> InvocationResult:
        """Synchronous invocation (RequestResponse); never raises for handler failures."""
        spec = self.spec(name_or_arn)
        request_id = str(uuid.uuid4())
        timeout = spec.timeout * self.timeout_factor
        started = time.monotonic()
        pool = self._pool(spec)
        worker = pool.acquire()
        if worker.init_error is not None:
            pool.discard(worker)
            return self._error(worker.init_error, request_id, started)
        try:
            message = worker.invoke(event, request_id, timeout)
        except (BrokenPipeError, OSError) as exc:
            pool.discard(worker)
            return self._error({"errorMessage": f"RequestId: {request_id} Error: {exc}", "errorType": "Runtime.ExitError"},
                               request_id, started)
        if message is None:
            exited = not worker.alive()
            status = "error"
            if worker.out_of_memory:
                error = {"errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
                         "errorType": "Runtime.ExitError"}
                log.warning("%s: went over its %d MB of memory; killed", spec.name, spec.memory_size)
            elif exited:
                error = {"errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: exit status "
                                         f"{worker.process.returncode}", "errorType": "Runtime.ExitError"}
            else:
                error = {"errorMessage": f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} "
                                         f"Task timed out after {timeout:.2f} seconds", "errorType": "Sandbox.Timedout"}
                status = "timeout"
            duration_ms = (time.monotonic() - started) * 1000
            # The runtime never got to END/REPORT: Lambda writes them itself, with the outcome.
            worker.trailer = [error["errorMessage"], f"END RequestId: {request_id}",
                              f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
                              f"{math.ceil(duration_ms)} ms\tMemory Size: {spec.memory_size} MB\tStatus: {status}\t"
                              + (f"Error Type: {error['errorType']}\t" if status == "error" else "")]
            pool.discard(worker)
            log.warning("%s: %s", spec.name, error["errorMessage"])
            return self._error(error, request_id, started)
        pool.release(worker)
        if "error" in message:
            message["error"]["requestId"] = request_id
            log.info("%s failed: %s: %s", spec.name, message["error"]["errorType"], message["error"]["errorMessage"])
            return self._error(message["error"], request_id, started)
        return InvocationResult(message.get("result"), None, request_id, (time.monotonic() - started) * 1000)

    @staticmethod
    def _error(error: dict, request_id: str, started: float) -> InvocationResult:
        return InvocationResult(error, "Unhandled", request_id, (time.monotonic() - started) * 1000)

    def invoke_async(self, name_or_arn: str, event: Any, retries: int | None = None) -> str:
        """Event invocation: returns a request id at once; retries like Lambda (the function's
        EventInvokeConfig, default twice), then dead-letters: to the function's DeadLetterQueue, sent
        with the function's own role as Lambda does, and to the local dead-letter record."""
        spec = self.spec(name_or_arn)  # unknown functions fail the call, as in Lambda
        retries = spec.max_retry_attempts if retries is None else retries
        request_id = str(uuid.uuid4())

        def run() -> None:
            try:
                for attempt in range(retries + 1):
                    if self._closed:
                        return
                    result = self.invoke(spec.name, event)
                    if result.ok:
                        return
                    if attempt < retries:
                        time.sleep(min(2 ** attempt, 5))
                if self.dead_letter:
                    self.dead_letter(f"lambda-async-{spec.name}", event, result.payload)
                self._send_to_dead_letter_queue(spec, event, result.payload)
            finally:
                self._async_threads.discard(threading.current_thread())

        thread = threading.Thread(target=run, name=f"lambda-async-{spec.name}", daemon=True)
        self._async_threads.add(thread)
        thread.start()
        return request_id

    def busy(self) -> bool:
        """True while an asynchronous invocation (or its retries) is still running."""
        return any(thread.is_alive() for thread in list(self._async_threads))

    def _send_to_dead_letter_queue(self, spec: FunctionSpec, event: Any, error: Any) -> None:
        if not spec.dead_letter_arn:
            return
        from local.aws.eventbridge import local_client

        credentials = self.credentials_for(spec) if self.credentials_for else None
        try:
            sqs = local_client("sqs", self.endpoint_url, credentials)
            # Lambda sends to the queue's ARN with sqs:SendMessage only (the role SAM generates
            # grants nothing else): the URL comes from the ARN, not from GetQueueUrl.
            _, _, _, _, account, queue_name = spec.dead_letter_arn.split(":", 5)
            queue_url = f"{self.endpoint_url}/{account}/{queue_name}"
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(event), MessageAttributes={
                "RequestID": {"DataType": "String", "StringValue": "async"},
                "ErrorMessage": {"DataType": "String", "StringValue": json.dumps(error)[:1000]}})
        except Exception:  # Lambda counts this as a DeadLetterErrors metric; the event is gone there
            log.exception("%s: could not send the failed event to its dead-letter queue %s", spec.name,
                          spec.dead_letter_arn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
        for thread in list(self._async_threads):
            thread.join(timeout=5)

    # -- gateway route -----------------------------------------------------------------------------
    def install(self, gateway) -> None:
        gateway.route_path(INVOKE_PATH, self.wsgi_invoke, methods=["POST"])

    def wsgi_invoke(self, environ: dict, start_response):
        import re

        match = re.match(INVOKE_PATH, environ.get("PATH_INFO", ""))
        name = match.group("name") if match else ""
        body = environ.get("gateway.body", b"")
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        try:
            event = json.loads(body) if body.strip() else {}
        except ValueError:
            return _rest_error(start_response, 400, "InvalidRequestContentException",
                               "Could not parse request body into json")
        try:
            if invocation_type == "DryRun":
                self.spec(name)
                start_response("204 No Content", [("Content-Length", "0")])
                return [b""]
            if invocation_type == "Event":
                request_id = self.invoke_async(name, event)
                start_response("202 Accepted", [("Content-Length", "0"), ("x-amzn-RequestId", request_id)])
                return [b""]
            result = self.invoke(name, event)
        except FunctionNotFound as exc:
            return _rest_error(start_response, 404, "ResourceNotFoundException", str(exc))
        data = result.payload_bytes()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   ("X-Amz-Executed-Version", "$LATEST"), ("x-amzn-RequestId", result.request_id)]
        if result.function_error:
            headers.append(("X-Amz-Function-Error", result.function_error))
        start_response("200 OK", headers)
        return [data]


def _rest_error(start_response, status: int, code: str, message: str):
    data = json.dumps({"Type": "User", "Message": message, "message": message}).encode()
    start_response(f"{status} Error", [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                                       ("x-amzn-ErrorType", code)])
    return [data]
