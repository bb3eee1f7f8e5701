"""The local SageMaker Pipelines service: runs the pipeline definition JSON (the very one deployed
to AWS) on this machine, with jobs on one shared local Ray head.

Installed on the gateway, it answers `SageMaker.{StartPipelineExecution, DescribePipelineExecution,
ListPipelineExecutions, ListPipelineExecutionSteps, StopPipelineExecution}` in AWS's shapes; the
definition itself is read from moto (`DescribePipeline`). Executions queue onto a small thread pool;
each walks the step graph: Processing and Tuning steps run the job scripts as subprocesses (see
`executor_jobs`), Condition/Fail/RegisterModel steps are interpreted here, CacheConfig is honoured
with AWS's cache-key attributes, and every status change is put on EventBridge as the
`aws.sagemaker` events AWS emits.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local import executor_definition as defn
from local import executor_jobs as jobs
from local.executor_definition import Context, DefinitionError, ResolutionError
from local.executor_jobs import JobRuntime, StepFailed, StepStopped, arn
from local.gateway import LocalGateway, aws_error, json_response, request_json

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
EXECUTION_EVENT = "SageMaker Model Building Pipeline Execution Status Change"
STEP_EVENT = "SageMaker Model Building Pipeline Execution Step Status Change"
TERMINAL = ("Succeeded", "Failed", "Stopped")
TARGETS = ("StartPipelineExecution", "DescribePipelineExecution", "ListPipelineExecutions",
           "ListPipelineExecutionSteps", "StopPipelineExecution")

ProgressCallback = Callable[[str, str | None, str], None]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _epoch(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None


@dataclass
class StepRun:
    name: str
    type: str
    status: str = "Starting"
    start: datetime | None = None
    end: datetime | None = None
    failure_reason: str | None = None
    metadata: dict = field(default_factory=dict)
    cache_source: str | None = None
    display_name: str | None = None
    description: str | None = None

    def to_api(self) -> dict:
        item: dict[str, Any] = {"StepName": self.name, "StepStatus": self.status, "AttemptCount": 1}
        for key, value in (("StartTime", _epoch(self.start)), ("EndTime", _epoch(self.end)),
                           ("StepDisplayName", self.display_name), ("StepDescription", self.description),
                           ("FailureReason", self.failure_reason)):
            if value is not None:
                item[key] = value
        if self.metadata:
            item["Metadata"] = self.metadata
        if self.cache_source:
            item["CacheHitResult"] = {"SourcePipelineExecutionArn": self.cache_source}
        return item


@dataclass
class Execution:
    arn: str
    id: str
    pipeline_name: str
    pipeline_arn: str
    definition: dict
    parameters: dict[str, Any]
    display_name: str
    description: str | None
    token: str
    creation: datetime = field(default_factory=_now)
    status: str = "Executing"
    failure_reason: str | None = None
    end: datetime | None = None
    last_modified: datetime = field(default_factory=_now)
    steps: dict[str, StepRun] = field(default_factory=dict)
    step_order: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    processes: set = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)
    context: Context | None = None

    def summary(self) -> dict:
        item = {"PipelineExecutionArn": self.arn, "StartTime": _epoch(self.creation),
                "PipelineExecutionStatus": self.status, "PipelineExecutionDisplayName": self.display_name}
        if self.description:
            item["PipelineExecutionDescription"] = self.description
        if self.failure_reason:
            item["PipelineExecutionFailureReason"] = self.failure_reason
        return item


def trials_that_fit(cpus: int) -> int:
    """How many training jobs the train job's default sizing lets run side by side on one node."""
    from jobs.train import default_ray_params

    sizing = default_ray_params(alive_nodes=1, cluster_cpus=cpus)
    return max(1, int(cpus // (sizing["num_actors"] * sizing["cpus_per_actor"])))


class PipelineExecutor:
    """Runs SageMaker pipeline definitions locally. See the module docstring.

    gateway: the LocalGateway (routes are installed on it; jobs and clients use its URL).
    work_dir: step roots, logs and the step cache live here (`<work>/<execution id>/<step>/`).
    ray_address: the shared Ray head (`host:port`), passed to every job as RAY_ADDRESS.
    substitutions: `${Name}` placeholders to replace in definitions read from moto.
    on_progress: called as `(execution_arn, step_name | None, status)` on every status change.
    """

    def __init__(self, gateway: LocalGateway, work_dir: str | os.PathLike, ray_address: str | None = None,
                 max_concurrent_executions: int = 1, substitutions: dict[str, str] | None = None, *,
                 python: str = sys.executable, on_progress: ProgressCallback | None = None,
                 emit_events: bool = True, max_parallel_trials: int | None = None,
                 ray_env: dict[str, str] | None = None, job_env: dict[str, str] | None = None):
        self.gateway = gateway
        self.work_dir = Path(work_dir).resolve()
        self.ray_address = ray_address
        self.substitutions = dict(substitutions or {})
        self.python = python
        self.emit_events = emit_events
        # Trials of one tuning job in parallel: as many as the train job's own actor sizing fits on
        # this machine's Ray head (it gives each trial half a node's CPUs: two trials at a time).
        self.max_parallel_trials = max_parallel_trials or trials_that_fit(os.cpu_count() or 1)
        self.ray_env = ray_env
        self.job_env = dict(job_env or {})
        self._listeners: list[ProgressCallback] = [on_progress] if on_progress else []
        self._pool = ThreadPoolExecutor(max_workers=max(1, max_concurrent_executions),
                                        thread_name_prefix="pipeline-execution")
        self._executions: dict[str, Execution] = {}
        self._by_token: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._closed = False
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._cache_file = self.work_dir / "step-cache.json"
        self._cache: list[dict] = self._load_cache()

    # -- wiring ---------------------------------------------------------------------------------
    def install(self) -> "PipelineExecutor":
        for name in TARGETS:
            self.gateway.route_target(f"SageMaker.{name}", self._app(getattr(self, f"_api_{_snake(name)}")))
        return self

    def add_progress_listener(self, listener: ProgressCallback) -> None:
        self._listeners.append(listener)

    def remove_progress_listener(self, listener: ProgressCallback) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _app(self, handler: Callable[[dict], dict]):
        def app(environ, start_response):
            try:
                return json_response(start_response, 200, handler(request_json(environ)))
            except ApiError as err:
                return aws_error(start_response, err.status, err.code, err.message)
        return app

    def client(self, service: str):
        return boto3.client(service, endpoint_url=self.gateway.url, region_name=jobs.REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            aws_session_token="testing", config=Config(retries={"max_attempts": 2}))

    # -- public Python API (the HTTP handlers use the same) ------------------------------------
    def start_execution(self, pipeline_name: str, parameters: list[dict] | dict | None = None,
                        client_request_token: str | None = None, display_name: str | None = None,
                        description: str | None = None) -> str:
        """Queues an execution; returns its ARN (the same ARN again for a repeated token)."""
        if self._closed:
            raise ApiError(400, "ValidationException", "The local pipeline executor is shut down")
        name = pipeline_name.split(":pipeline/")[-1].split("/")[0]
        token = client_request_token or str(uuid.uuid4())
        with self._lock:
            existing = self._by_token.get((name, token))
            if existing:
                return existing
        described = self._describe_pipeline(name)
        try:
            definition = json.loads(defn.substitute(described["PipelineDefinition"], self.substitutions))
            values = defn.resolve_parameters(definition, parameters)
            defn.build_graph(definition)
        except DefinitionError as exc:
            raise ApiError(400, "ValidationException", str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, "ValidationException", f"Pipeline definition is not valid JSON: {exc}") from None
        execution_id = secrets.token_hex(6)
        execution_arn = f"{described['PipelineArn']}/execution/{execution_id}"
        execution = Execution(
            arn=execution_arn, id=execution_id, pipeline_name=name, pipeline_arn=described["PipelineArn"],
            definition=definition, parameters=values, display_name=display_name or f"execution-{int(time.time() * 1000)}",
            description=description, token=token,
        )
        with self._lock:
            existing = self._by_token.get((name, token))
            if existing:  # a concurrent duplicate won the race
                return existing
            self._by_token[(name, token)] = execution_arn
            self._executions[execution_arn] = execution
        self._execution_event(execution, None)
        self._notify(execution, None, execution.status)
        self._pool.submit(self._run_guarded, execution)
        return execution_arn

    def describe_execution(self, execution_arn: str) -> dict:
        execution = self._get(execution_arn)
        item = {
            "PipelineArn": execution.pipeline_arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineExecutionStatus": execution.status,
            "PipelineExperimentConfig": {"ExperimentName": execution.pipeline_name, "TrialName": execution.id},
            "CreationTime": _epoch(execution.creation),
            "LastModifiedTime": _epoch(execution.last_modified),
            "CreatedBy": {}, "LastModifiedBy": {},
        }
        if execution.description:
            item["PipelineExecutionDescription"] = execution.description
        if execution.failure_reason:
            item["FailureReason"] = execution.failure_reason
        return item

    def list_steps(self, execution_arn: str, ascending: bool = False) -> list[dict]:
        execution = self._get(execution_arn)
        with execution.lock:
            runs = [execution.steps[n] for n in execution.step_order]
            items = [run.to_api() for run in runs]
        # Start order breaks ties between steps that started within the same instant.
        order = sorted(range(len(items)), key=lambda i: (items[i].get("StartTime") or 0, i), reverse=not ascending)
        return [items[i] for i in order]

    def stop_execution(self, execution_arn: str) -> str:
        execution = self._get(execution_arn)
        with execution.lock:
            if execution.status in TERMINAL or execution.status == "Stopping":
                return execution.arn
            previous, execution.status = execution.status, "Stopping"
            execution.last_modified = _now()
        execution.stop_event.set()
        self._execution_event(execution, previous)
        self._notify(execution, None, "Stopping")
        for process in list(execution.processes):
            jobs.kill_process_group(process)
        return execution.arn

    def wait(self, execution_arn: str, timeout: float | None = None) -> dict:
        """Blocks until the execution ends; returns its description."""
        execution = self._get(execution_arn)
        if not execution.done.wait(timeout):
            raise TimeoutError(f"{execution_arn} still {execution.status} after {timeout} s")
        return self.describe_execution(execution_arn)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Stops running and queued executions (killing their job processes) and the pool."""
        self._closed = True
        for execution in list(self._executions.values()):
            if execution.status not in TERMINAL:
                self.stop_execution(execution.arn)
        deadline = time.monotonic() + timeout
        for execution in list(self._executions.values()):
            execution.done.wait(max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        for execution in list(self._executions.values()):
            if not execution.done.is_set():  # cancelled before it ever ran
                self._finish(execution, "Stopped", None)

    # -- HTTP handlers --------------------------------------------------------------------------
    def _api_start_pipeline_execution(self, body: dict) -> dict:
        if not body.get("PipelineName"):
            raise ApiError(400, "ValidationException", "PipelineName is required")
        arn_ = self.start_execution(body["PipelineName"], body.get("PipelineParameters"),
                                    body.get("ClientRequestToken"), body.get("PipelineExecutionDisplayName"),
                                    body.get("PipelineExecutionDescription"))
        return {"PipelineExecutionArn": arn_}

    def _api_describe_pipeline_execution(self, body: dict) -> dict:
        return self.describe_execution(body.get("PipelineExecutionArn", ""))

    def _api_list_pipeline_executions(self, body: dict) -> dict:
        name = body.get("PipelineName", "").split(":pipeline/")[-1].split("/")[0]
        with self._lock:
            executions = [e for e in self._executions.values() if e.pipeline_name == name]
        after, before = body.get("CreatedAfter"), body.get("CreatedBefore")
        if after is not None:
            executions = [e for e in executions if _epoch(e.creation) > float(after)]
        if before is not None:
            executions = [e for e in executions if _epoch(e.creation) < float(before)]
        key = (lambda e: e.arn) if body.get("SortBy") == "PipelineExecutionArn" else (lambda e: e.creation)
        executions.sort(key=key, reverse=body.get("SortOrder", "Descending") != "Ascending")
        return _page([e.summary() for e in executions], body, "PipelineExecutionSummaries")

    def _api_list_pipeline_execution_steps(self, body: dict) -> dict:
        steps = self.list_steps(body.get("PipelineExecutionArn", ""), body.get("SortOrder") == "Ascending")
        return _page(steps, body, "PipelineExecutionSteps")

    def _api_stop_pipeline_execution(self, body: dict) -> dict:
        return {"PipelineExecutionArn": self.stop_execution(body.get("PipelineExecutionArn", ""))}

    # -- execution ------------------------------------------------------------------------------
    def _get(self, execution_arn: str) -> Execution:
        with self._lock:
            execution = self._executions.get(execution_arn)
        if execution is None:
            raise ApiError(400, "ResourceNotFound", f"Pipeline execution {execution_arn!r} does not exist")
        return execution

    def _describe_pipeline(self, name: str) -> dict:
        try:
            return self.client("sagemaker").describe_pipeline(PipelineName=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ResourceNotFound", "ValidationException", "ResourceNotFoundException"):
                raise ApiError(400, "ResourceNotFound", f"Pipeline {name!r} does not exist") from None
            raise

    def _run_guarded(self, execution: Execution) -> None:
        try:
            if execution.stop_event.is_set():
                self._finish(execution, "Stopped", None)
                return
            self._run(execution)
        except Exception as exc:  # the executor must never leave an execution "Executing"
            log.exception("execution %s crashed", execution.arn)
            self._finish(execution, "Failed", f"Local executor error: {type(exc).__name__}: {exc}")

    def _run(self, execution: Execution) -> None:
        graph = defn.build_graph(execution.definition)
        order = defn.topological_order(graph)
        ctx = execution.context = Context(
            parameters=execution.parameters,
            execution={
                "PipelineExecutionId": execution.id, "PipelineExecutionArn": execution.arn,
                "PipelineName": execution.pipeline_name, "PipelineArn": execution.pipeline_arn,
                "StartDateTime": execution.creation.isoformat(), "CurrentDateTime": execution.creation.isoformat(),
            },
            read_json=lambda uri: jobs.read_s3_json(self.client("s3"), uri),
        )
        chosen_branches: dict[str, str] = {}
        finished: set[str] = set()
        skipped: set[str] = set()
        failed: list[tuple[str, str]] = []
        for name in order:
            node = graph[name]
            if execution.stop_event.is_set():
                break
            if node.branch_of and chosen_branches.get(node.branch_of[0]) != node.branch_of[1]:
                skipped.add(name)
                continue
            if node.depends_on & skipped or not node.depends_on <= finished:
                skipped.add(name)  # a dependency did not run (other branch, or failed)
                continue
            ctx.execution["CurrentDateTime"] = _now().isoformat()
            outcome = self._run_step(execution, node, ctx)
            if outcome.status == "Succeeded":
                finished.add(name)
                if node.type == "Condition":
                    chosen_branches[name] = "If" if outcome.metadata["Condition"]["Outcome"] == "True" else "Else"
            elif outcome.status == "Stopped":
                break
            else:
                failed.append((name, outcome.failure_reason or "failed"))
                break  # like SageMaker: no new step starts once one has failed
        if execution.stop_event.is_set():
            self._finish(execution, "Stopped", None)
        elif failed:
            name, reason = failed[0]
            self._finish(execution, "Failed", f"Step failure: {name}: {reason}"[:1024])
        else:
            self._finish(execution, "Succeeded", None)

    def _finish(self, execution: Execution, status: str, reason: str | None) -> None:
        with execution.lock:
            if execution.done.is_set():
                return
            previous = execution.status
            execution.status, execution.failure_reason = status, reason
            execution.end = execution.last_modified = _now()
            for run in execution.steps.values():
                if run.status not in TERMINAL:
                    run.status, run.end = "Stopped", execution.end
        self._execution_event(execution, previous)
        self._notify(execution, None, status)
        execution.done.set()

    def _set_step(self, execution: Execution, run: StepRun, status: str, **changes) -> None:
        with execution.lock:
            known = run.name in execution.steps
            previous = run.status if known else None
            run.status = status
            for key, value in changes.items():
                setattr(run, key, value)
            if not known:
                execution.steps[run.name] = run
                execution.step_order.append(run.name)
            execution.last_modified = _now()
        if known and previous == status:
            return  # details (metadata) only: no new status to announce
        self._step_event(execution, run, previous)
        self._notify(execution, run.name, status)

    def _run_step(self, execution: Execution, node: defn.StepNode, ctx: Context) -> StepRun:
        spec = node.spec
        run = StepRun(name=node.name, type=node.type, start=_now(),
                      display_name=spec.get("DisplayName"), description=spec.get("Description"))
        self._set_step(execution, run, "Executing")
        step_root = self.work_dir / execution.id / node.name
        log_path = self.work_dir / execution.id / "logs" / f"{node.name}.log"
        try:
            if node.type == "Condition":
                outcome = defn.evaluate_conditions(spec["Arguments"].get("Conditions", []), ctx)
                ctx.step_properties[node.name] = {"Outcome": outcome}
                self._set_step(execution, run, "Succeeded", end=_now(),
                               metadata={"Condition": {"Outcome": "True" if outcome else "False"}})
            elif node.type == "Fail":
                message = defn.to_text(defn.resolve(spec.get("Arguments", {}).get("ErrorMessage", ""), ctx))
                ctx.step_properties[node.name] = {}
                self._set_step(execution, run, "Failed", end=_now(), failure_reason=message[:1024] or "Fail step",
                               metadata={"Fail": {"ErrorMessage": message}})
            elif node.type in ("Processing", "Tuning"):
                self._run_job_step(execution, node, ctx, run, step_root, log_path)
            elif node.type == "RegisterModel":
                args = defn.resolve(spec["Arguments"], ctx)
                package_arn = self._register_model(execution, args)
                ctx.step_properties[node.name] = {"ModelPackageArn": package_arn}
                self._set_step(execution, run, "Succeeded", end=_now(), metadata={"RegisterModel": {"Arn": package_arn}})
            else:
                raise StepFailed(f"Step type {node.type} is not supported by the local pipeline executor")
        except StepStopped:
            self._set_step(execution, run, "Stopped", end=_now())
        except (StepFailed, ResolutionError, DefinitionError) as exc:
            self._set_step(execution, run, "Failed", end=_now(), failure_reason=str(exc)[:1024])
        except ClientError as exc:
            self._set_step(execution, run, "Failed", end=_now(), failure_reason=f"{exc}"[:1024])
        except Exception as exc:
            log.exception("step %s of %s crashed", node.name, execution.arn)
            self._set_step(execution, run, "Failed", end=_now(),
                           failure_reason=f"Local executor error: {type(exc).__name__}: {exc}"[:1024])
        return run

    def _run_job_step(self, execution: Execution, node: defn.StepNode, ctx: Context, run: StepRun,
                      step_root: Path, log_path: Path) -> None:
        spec = node.spec
        args = defn.resolve(spec["Arguments"], ctx)
        key = defn.cache_key(execution.pipeline_name, node.name, node.type, args)
        cache = spec.get("CacheConfig") or {}
        hit = self._cache_lookup(key, defn.parse_expire_after(cache.get("ExpireAfter"))) if cache.get("Enabled") else None
        s3 = self.client("s3")
        if hit is not None:
            properties = hit["properties"]
            ctx.step_properties[node.name] = properties
            self._load_property_files(ctx, spec, properties, None, s3)
            self._set_step(execution, run, "Succeeded", end=_now(), metadata=hit["metadata"],
                           cache_source=hit["execution_arn"])
            return
        runtime = self._runtime(execution)
        if node.type == "Processing":
            name = jobs.job_name("pipelines", execution.id, node.name)
            metadata = {"ProcessingJob": {"Arn": arn("processing-job", name)}}
            self._set_step(execution, run, "Executing", metadata=metadata)
            properties = jobs.run_processing(node.name, args, step_root, log_path, runtime, name)
            self._load_property_files(ctx, spec, properties, step_root, s3)
        else:
            name = jobs.job_name(execution.id, node.name, limit=32)
            metadata = {"TuningJob": {"Arn": arn("hyper-parameter-tuning-job", name)}}
            self._set_step(execution, run, "Executing", metadata=metadata)
            properties = jobs.run_tuning(
                node.name, args, step_root, log_path.parent / node.name, runtime, name,
                seed=_tuning_seed(execution.pipeline_name, node.name, args),
                max_parallel_trials=self.max_parallel_trials,
                on_trial=lambda trial: self._notify(execution, f"{node.name}/{trial.name}", trial.status),
            )
        ctx.step_properties[node.name] = properties
        if cache.get("Enabled"):
            self._cache_store(key, execution.arn, node.name, properties, metadata)
        self._set_step(execution, run, "Succeeded", end=_now(), metadata=metadata)

    def _load_property_files(self, ctx: Context, spec: dict, properties: dict, root: Path | None, s3) -> None:
        if spec.get("PropertyFiles"):
            for file_name, document in jobs.load_property_files(spec, properties, root, s3).items():
                ctx.property_files[(spec["Name"], file_name)] = document

    def _runtime(self, execution: Execution) -> JobRuntime:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAY_", "SM_"))}
        env.update(DUMMY_CREDENTIALS)
        env.update({
            "AWS_ENDPOINT_URL": self.gateway.url,
            "AWS_DEFAULT_REGION": jobs.REGION,
            "AWS_REGION": jobs.REGION,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p),
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        })
        if self.ray_env is not None:
            env.update(self.ray_env)
        elif self.ray_address:
            from local.ray_head import ray_client_env

            env.update(ray_client_env(self.ray_address))
        env.update(self.job_env)
        # Ray workers inherit the head's environment, not the job's: hand them the job's AWS
        # settings the way Ray's own job submission does (a job-level runtime_env), so actors reach
        # the local gateway as every node's environment does on SageMaker.
        worker_env = {k: v for k, v in env.items() if k.startswith("AWS_")}
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps({"runtime_env": {"env_vars": worker_env}})

        def register(process: subprocess.Popen) -> None:
            execution.processes.add(process)
            if execution.stop_event.is_set():  # stopped between the check and the start
                jobs.kill_process_group(process)

        return JobRuntime(python=self.python, base_env=env, stop_event=execution.stop_event,
                          register_process=register, unregister_process=execution.processes.discard,
                          s3_factory=lambda: self.client("s3"))

    def _register_model(self, execution: Execution, args: dict) -> str:
        sagemaker = self.client("sagemaker")
        allowed = set(sagemaker.meta.service_model.operation_model("CreateModelPackage").input_shape.members)
        request = {k: v for k, v in args.items() if k in allowed and v not in ({}, None)}
        metrics = request.get("ModelMetrics")
        if isinstance(metrics, dict):
            request["ModelMetrics"] = {k: v for k, v in metrics.items() if v}
        if request.get("SkipModelValidation") == "None":
            request.pop("SkipModelValidation")
        request.setdefault("MetadataProperties", {}).setdefault("GeneratedBy", execution.arn)
        request.setdefault("ClientToken", f"{execution.id}-register")
        return sagemaker.create_model_package(**request)["ModelPackageArn"]

    # -- cache ----------------------------------------------------------------------------------
    def _load_cache(self) -> list[dict]:
        try:
            return json.loads(self._cache_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return []

    def _cache_lookup(self, key: str, expire_after) -> dict | None:
        now = time.time()
        with self._cache_lock:
            for entry in reversed(self._cache):
                if entry["key"] != key:
                    continue
                if expire_after is not None and now - entry["time"] > expire_after.total_seconds():
                    continue
                return entry
        return None

    def _cache_store(self, key: str, execution_arn: str, step: str, properties: dict, metadata: dict) -> None:
        with self._cache_lock:
            self._cache.append({"key": key, "time": time.time(), "execution_arn": execution_arn, "step": step,
                                "properties": properties, "metadata": metadata})
            tmp = self._cache_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._cache, default=str), encoding="utf-8")
            tmp.replace(self._cache_file)

    # -- progress and events --------------------------------------------------------------------
    def _notify(self, execution: Execution, step: str | None, status: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(execution.arn, step, status)
            except Exception:
                log.exception("progress listener failed")

    def _put_event(self, detail_type: str, detail: dict, resources: list[str]) -> None:
        if not self.emit_events:
            return
        try:
            response = self.client("events").put_events(Entries=[{
                "Source": "aws.sagemaker", "DetailType": detail_type, "Detail": json.dumps(detail),
                "Resources": resources,
            }])
            if response.get("FailedEntryCount"):
                log.warning("EventBridge rejected %s: %s", detail_type, response.get("Entries"))
        except Exception:  # events are best effort; an execution must not fail for them
            log.exception("could not put %s event", detail_type)

    def _execution_event(self, execution: Execution, previous: str | None) -> None:
        detail = {
            "pipelineArn": execution.pipeline_arn,
            "pipelineExecutionArn": execution.arn,
            "pipelineExecutionDisplayName": execution.display_name,
            "currentPipelineExecutionStatus": execution.status,
            "previousPipelineExecutionStatus": previous,
            "executionStartTime": execution.creation.isoformat(),
            "executionEndTime": execution.end.isoformat() if execution.end else None,
            "pipelineExecutionDescription": execution.description,
            "failureReason": execution.failure_reason,
        }
        self._put_event(EXECUTION_EVENT, detail, [execution.pipeline_arn, execution.arn])

    def _step_event(self, execution: Execution, run: StepRun, previous: str | None) -> None:
        detail = {
            "pipelineArn": execution.pipeline_arn,
            "pipelineExecutionArn": execution.arn,
            "stepName": run.name,
            "stepType": run.type,
            "currentStepStatus": run.status,
            "previousStepStatus": previous,
            "stepStartTime": run.start.isoformat() if run.start else None,
            "stepEndTime": run.end.isoformat() if run.end else None,
            "failureReason": run.failure_reason,
            "cacheHitResult": {"sourcePipelineExecutionArn": run.cache_source} if run.cache_source else None,
            "metadata": run.metadata,
        }
        self._put_event(STEP_EVENT, detail, [execution.pipeline_arn, execution.arn])

    # -- for tests and the CLI ------------------------------------------------------------------
    def execution_dir(self, execution_arn: str) -> Path:
        return self.work_dir / self._get(execution_arn).id

    def step_properties(self, execution_arn: str) -> dict[str, dict]:
        """The Describe*-shaped properties of the steps that ran (what `Get: Steps.X...` reads)."""
        context = self._get(execution_arn).context
        return dict(context.step_properties) if context else {}

    def property_file(self, execution_arn: str, step: str, name: str) -> Any:
        """A property file (e.g. the evaluation report) as the execution read it, or None."""
        context = self._get(execution_arn).context
        return context.property_files.get((step, name)) if context else None


def _tuning_seed(pipeline_name: str, step_name: str, args: dict) -> int:
    """The random search's seed: the search itself (ranges, limits, static values), not the data,
    so the same pipeline tries the same candidates on every dataset."""
    search = [pipeline_name, step_name, args.get("HyperParameterTuningJobConfig"),
              args.get("TrainingJobDefinition", {}).get("StaticHyperParameters")]
    return int(hashlib.sha256(json.dumps(search, sort_keys=True, default=str).encode()).hexdigest()[:8], 16)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _page(items: list[dict], body: dict, key: str) -> dict:
    start = int(body.get("NextToken") or 0)
    size = int(body.get("MaxResults") or 50)
    page = {key: items[start:start + size]}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return page
