"""The local SageMaker Pipelines service: runs the pipeline definition JSON (the very one deployed
to AWS) on this machine: one-host jobs on one shared local Ray head, multi-host jobs on Ray clusters
of their own.

Installed on the gateway, it answers `SageMaker.{StartPipelineExecution, DescribePipelineExecution,
ListPipelineExecutions, ListPipelineExecutionSteps, StopPipelineExecution}` in AWS's shapes; the
definition itself is read from moto (`DescribePipeline`). Executions queue onto a small thread pool;
each walks the step graph: Processing and Tuning steps run the job scripts as subprocesses in the
jobs image's environment, one per host of the job (see `jobs`, `hosts`), Condition/Fail/RegisterModel
steps are interpreted here, CacheConfig is honoured with AWS's cache-key attributes, and every status
change is put on EventBridge as the `aws.sagemaker` events AWS emits.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from local.aws.gateway import LocalGateway, aws_error, json_response, request_json
from local.aws.identities import aws_client
from local.aws.sagemaker_pipelines import definition as defn
from local.aws.sagemaker_pipelines import jobs
from local.aws.sagemaker_pipelines.definition import DefinitionError
from local.aws.sagemaker_pipelines.executions import (
    EXECUTION_EVENT,
    STEP_EVENT,
    TERMINAL,
    ApiError,
    Execution,
    StepRun,
    epoch,
    now,
    execution_event_detail,
    step_event_detail,
)
from local.aws.sagemaker_pipelines.hosts import kill_process_tree
from local.aws.sagemaker_pipelines.runner import ExecutionRunner
from local.aws.sagemaker_pipelines.step_cache import StepCache
from local.aws.sagemaker_pipelines.warm_pool import WarmPool
from local.jobs_image import JobsImage, default_image
from mlops_shared.aws import is_not_found

log = logging.getLogger(__name__)

# Every API about an execution: the executor owns executions, so it answers all of them (moto
# never hears of one).
TARGETS = ("StartPipelineExecution", "DescribePipelineExecution", "ListPipelineExecutions",
           "ListPipelineExecutionSteps", "StopPipelineExecution", "ListPipelineParametersForExecution",
           "DescribePipelineDefinitionForExecution")

ProgressCallback = Callable[[str, str | None, str], None]


def trials_that_fit(cpus: int) -> int:
    """How many training jobs run side by side on one node: each gets half of the node's CPUs
    (at least one), so two trials at a time on this 2-core machine; every trial is told its share
    (`jobs.train.JOBS_PER_NODE_VARIABLE`, set by `tuning`) and trains with all of it."""
    share = max(1, cpus // 2)
    return max(1, cpus // share)


class PipelineExecutor:
    """Runs SageMaker pipeline definitions locally. See the module docstring.

    gateway: the LocalGateway (routes are installed on it; jobs and clients use its URL).
    work_dir: step roots, logs and the step cache live here (`<work>/<execution id>/<step>/`).
    ray_address: the shared Ray head (`host:port`), passed to every one-host job as RAY_ADDRESS
        (multi-host jobs form their own cluster).
    image: the jobs image environment every job runs in (default: `local.jobs_image.default_image()`).
    substitutions: `${Name}` placeholders to replace in definitions read from moto.
    on_progress: called as `(execution_arn, step_name | None, status)` on every status change.
    """

    def __init__(self, gateway: LocalGateway, work_dir: str | os.PathLike, ray_address: str | None = None,
                 max_concurrent_executions: int = 1, substitutions: dict[str, str] | None = None, *,
                 image: JobsImage | None = None, on_progress: ProgressCallback | None = None,
                 emit_events: bool = True, max_parallel_trials: int | None = None,
                 ray_env: dict[str, str] | None = None, job_env: dict[str, str] | None = None,
                 identities: Any = None, strict: Any = None, warm_jobs: bool = False):
        self.gateway = gateway
        # Who acts (local.aws.identities.Identities): the service's bookkeeping as the local runtime,
        # its work as the pipeline execution role, each job as its own role. `strict`: the strict face,
        # which authorizes what SageMaker Pipelines itself does (creating jobs, passing roles).
        self.identities = identities
        self.strict = strict
        self.work_dir = Path(work_dir).resolve()
        self.ray_address = ray_address
        self.substitutions = dict(substitutions or {})
        self.image = (image or default_image()).ensure()
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
        self._closed = False
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache = StepCache(self.work_dir / "step-cache.json")
        self.runner = ExecutionRunner(self)
        # Warm job workers (warm_pool): off unless asked for (LocalCloud asks, unless
        # MLOPS_LOCAL_WARM_JOBS=0): they cost four pre-imported interpreters, worth it for a face
        # that runs pipelines, not for an executor a test builds to run one job.
        self.warm_pool: WarmPool | None = None
        if warm_jobs:
            env, shared_ray_env = self.runner.shared_job_env(self.image.program_dir())
            self.warm_pool = WarmPool(str(self.image.python), {**env, **shared_ray_env})

    def prewarm(self) -> None:
        """Starts the warm job workers for the current program snapshot (returns at once; a job
        that starts before its worker is ready waits for it)."""
        if self.warm_pool is not None:
            self.warm_pool.prewarm(self.image.program_dir())

    # -- wiring ---------------------------------------------------------------------------------
    def install(self) -> "PipelineExecutor":
        for name in TARGETS:
            self.gateway.route_target(f"SageMaker.{name}", self._app(getattr(self, f"_api_{_snake(name)}")))
        self.prewarm()
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
        """The service reading its own resources (DescribePipeline, its events): the local runtime."""
        if self.identities is not None:
            return aws_client(service, self.gateway.url, self.identities.runtime, max_attempts=2)
        return boto3.client(service, endpoint_url=self.gateway.url, region_name=jobs.REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            aws_session_token="testing", config=Config(retries={"max_attempts": 2}))

    def role_credentials(self, role_arn: str | None, session: str):
        """A session of `role_arn` as SageMaker gets it (None without identities: a bare gateway)."""
        if self.identities is None or not role_arn:
            return None
        return self.identities.role_credentials(role_arn, "sagemaker.amazonaws.com", session)

    def authorize_job(self, execution: Execution, operation: str, request: dict) -> None:
        """What SageMaker does when Pipelines creates a step's job: the request must meet the
        operation's constraints, and the pipeline execution role must be allowed to make it (and to
        pass the job its role). Raises StepFailed with SageMaker's answer."""
        from local.aws.strict.principals import principal_for_access_key
        from local.aws.strict.service_constraints import check, format_message

        if self.gateway.strict is not None:  # the constraints hold wherever the gateway checks them
            violations = check("sagemaker", operation, request)
            if violations:
                raise jobs.StepFailed(f"ValidationException: {format_message(violations)}")
        if self.strict is None:
            return
        credentials = self.role_credentials(execution.role_arn, "pipelines")
        principal = principal_for_access_key(credentials.access_key_id) if credentials else None
        if principal is None:
            raise jobs.StepFailed(f"the pipeline's role {execution.role_arn} cannot be assumed by SageMaker")
        decision = self.strict.authorize(principal, "sagemaker", operation, request)
        if decision is not None:
            raise jobs.StepFailed(f"AccessDeniedException: {decision.message()}")

    def role_client(self, role_arn: str | None, service: str, session: str = "pipelines"):
        """A client acting as `role_arn` (SageMaker Pipelines' work, a job's data movement)."""
        credentials = self.role_credentials(role_arn, session)
        if credentials is None:
            return self.client(service)
        return aws_client(service, self.gateway.url, credentials, max_attempts=2)

    # -- public Python API (the HTTP handlers use the same) ------------------------------------
    def start_execution(self, pipeline_name: str, parameters: list[dict] | dict | None = None,
                        client_request_token: str | None = None, display_name: str | None = None,
                        description: str | None = None) -> str:
        """Queues an execution; returns its ARN (the same ARN again for a repeated token)."""
        if self._closed:
            raise ApiError(400, "ValidationException", "The local pipeline executor is shut down")
        # The jobs' code may have changed since the workers were warmed: warm this snapshot's.
        self.prewarm()
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
            description=description, token=token, role_arn=described.get("RoleArn"),
        )
        with self._lock:
            existing = self._by_token.get((name, token))
            if existing:  # a concurrent duplicate won the race
                return existing
            self._by_token[(name, token)] = execution_arn
            self._executions[execution_arn] = execution
        self.execution_event(execution, None)
        self.notify(execution, None, execution.status)
        self._pool.submit(self.runner.run, execution)
        return execution_arn

    def describe_execution(self, execution_arn: str) -> dict:
        execution = self._get(execution_arn)
        item = {
            "PipelineArn": execution.pipeline_arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionDisplayName": execution.display_name,
            "PipelineExecutionStatus": execution.status,
            "PipelineExperimentConfig": {"ExperimentName": execution.pipeline_name, "TrialName": execution.id},
            "CreationTime": epoch(execution.creation),
            "LastModifiedTime": epoch(execution.last_modified),
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
            execution.last_modified = now()
        execution.stop_event.set()
        self.execution_event(execution, previous)
        self.notify(execution, None, "Stopping")
        for process in list(execution.processes):
            kill_process_tree(process)
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
                self.runner.finish(execution, "Stopped", None)
        if self.warm_pool is not None:
            self.warm_pool.close()

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
            executions = [e for e in executions if epoch(e.creation) > float(after)]
        if before is not None:
            executions = [e for e in executions if epoch(e.creation) < float(before)]
        key = (lambda e: e.arn) if body.get("SortBy") == "PipelineExecutionArn" else (lambda e: e.creation)
        executions.sort(key=key, reverse=body.get("SortOrder", "Descending") != "Ascending")
        return _page([e.summary() for e in executions], body, "PipelineExecutionSummaries")

    def _api_list_pipeline_execution_steps(self, body: dict) -> dict:
        steps = self.list_steps(body.get("PipelineExecutionArn", ""), body.get("SortOrder") == "Ascending")
        return _page(steps, body, "PipelineExecutionSteps")

    def _api_list_pipeline_parameters_for_execution(self, body: dict) -> dict:
        execution = self._get(body.get("PipelineExecutionArn", ""))
        parameters = [{"Name": name, "Value": defn.to_text(value)} for name, value in execution.parameters.items()]
        return _page(parameters, body, "PipelineParameters")

    def _api_describe_pipeline_definition_for_execution(self, body: dict) -> dict:
        execution = self._get(body.get("PipelineExecutionArn", ""))
        return {"PipelineDefinition": json.dumps(execution.definition), "CreationTime": epoch(execution.creation)}

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
            if is_not_found(exc):
                raise ApiError(400, "ResourceNotFound", f"Pipeline {name!r} does not exist") from None
            raise

    # -- progress and events --------------------------------------------------------------------
    def notify(self, execution: Execution, step: str | None, status: str) -> None:
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

    def execution_event(self, execution: Execution, previous: str | None) -> None:
        self._put_event(EXECUTION_EVENT, execution_event_detail(execution, previous),
                        [execution.pipeline_arn, execution.arn])

    def step_event(self, execution: Execution, run: StepRun, previous: str | None) -> None:
        self._put_event(STEP_EVENT, step_event_detail(execution, run, previous), [execution.pipeline_arn, execution.arn])

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


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _page(items: list[dict], body: dict, key: str) -> dict:
    start = int(body.get("NextToken") or 0)
    size = int(body.get("MaxResults") or 50)
    page = {key: items[start:start + size]}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return page
