"""Running one execution of a pipeline definition locally: the step graph in dependency order, each
step interpreted (Condition, Fail, RegisterModel) or run as its job (Processing, Tuning; see `jobs`
and `tuning`), CacheConfig honoured, every status change announced through the service (progress
listeners and the `aws.sagemaker` EventBridge events)."""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from local.aws.sagemaker_pipelines import definition as defn
from local.aws.sagemaker_pipelines import jobs, tuning
from local.aws.sagemaker_pipelines.definition import Context, DefinitionError, ResolutionError
from local.aws.sagemaker_pipelines.executions import TERMINAL, Execution, StepRun, now
from local.aws.sagemaker_pipelines.hosts import kill_process_tree
from local.aws.sagemaker_pipelines.jobs import JobRuntime, StepFailed, StepStopped, arn
from local.ray_head import ray_client_env

if TYPE_CHECKING:
    from local.aws.sagemaker_pipelines.service import PipelineExecutor

log = logging.getLogger(__name__)

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
# A multi-host job forms its own Ray cluster across its hosts' loopback addresses (jobs.ray_cluster):
# cluster mode on (the shared head turns it off to stay on 127.0.0.1), no token to agree on.
CLUSTER_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


class ExecutionRunner:
    """Runs executions for a `PipelineExecutor` (its clients, work dir, cache, job environment)."""

    def __init__(self, service: "PipelineExecutor"):
        self.service = service

    def run(self, execution: Execution) -> None:
        try:
            if execution.stop_event.is_set():
                self.finish(execution, "Stopped", None)
                return
            self._walk(execution)
        except Exception as exc:  # the executor must never leave an execution "Executing"
            log.exception("execution %s crashed", execution.arn)
            self.finish(execution, "Failed", f"Local executor error: {type(exc).__name__}: {exc}")


    def _walk(self, execution: Execution) -> None:
        graph = defn.build_graph(execution.definition)
        order = defn.topological_order(graph)
        ctx = execution.context = Context(
            parameters=execution.parameters,
            execution={
                "PipelineExecutionId": execution.id, "PipelineExecutionArn": execution.arn,
                "PipelineName": execution.pipeline_name, "PipelineArn": execution.pipeline_arn,
                "StartDateTime": execution.creation.isoformat(), "CurrentDateTime": execution.creation.isoformat(),
            },
            # SageMaker Pipelines reads JSON (JsonGet) with the pipeline execution role.
            read_json=lambda uri: jobs.read_s3_json(self.service.role_client(execution.role_arn, "s3"), uri),
        )
        try:
            self._start_experiment(execution, ctx)
        except StepFailed as exc:  # SageMaker fails the execution before its first step
            self.finish(execution, "Failed", str(exc)[:1024])
            return
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
            ctx.execution["CurrentDateTime"] = now().isoformat()
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
            self.finish(execution, "Stopped", None)
        elif failed:
            name, reason = failed[0]
            self.finish(execution, "Failed", f"Step failure: {name}: {reason}"[:1024])
        else:
            self.finish(execution, "Succeeded", None)


    def _start_experiment(self, execution: Execution, ctx: Context) -> None:
        """`PipelineExperimentConfig`: SageMaker Pipelines creates the experiment (the pipeline's) and
        the trial (the execution's) with the pipeline execution role before the first step."""
        config = execution.definition.get("PipelineExperimentConfig")
        if not config:
            return
        experiment = defn.to_text(defn.resolve(config.get("ExperimentName"), ctx))
        trial = defn.to_text(defn.resolve(config.get("TrialName"), ctx))
        sagemaker = self.service.role_client(execution.role_arn, "sagemaker")
        for call, kwargs in ((sagemaker.create_experiment, {"ExperimentName": experiment}),
                             (sagemaker.create_trial, {"TrialName": trial, "ExperimentName": experiment})):
            try:
                call(**kwargs)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("ResourceInUse", "ValidationException") \
                        or "exist" not in str(exc).lower():
                    raise StepFailed(f"the pipeline's experiment tracking could not start: {exc}") from None

    def finish(self, execution: Execution, status: str, reason: str | None) -> None:
        with execution.lock:
            if execution.done.is_set():
                return
            previous = execution.status
            execution.status, execution.failure_reason = status, reason
            execution.end = execution.last_modified = now()
            for run in execution.steps.values():
                if run.status not in TERMINAL:
                    run.status, run.end = "Stopped", execution.end
        self.service.execution_event(execution, previous)
        self.service.notify(execution, None, status)
        execution.done.set()


    def set_step(self, execution: Execution, run: StepRun, status: str, **changes) -> None:
        with execution.lock:
            known = run.name in execution.steps
            previous = run.status if known else None
            run.status = status
            for key, value in changes.items():
                setattr(run, key, value)
            if not known:
                execution.steps[run.name] = run
                execution.step_order.append(run.name)
            execution.last_modified = now()
        if known and previous == status:
            return  # details (metadata) only: no new status to announce
        self.service.step_event(execution, run, previous)
        self.service.notify(execution, run.name, status)


    def _run_step(self, execution: Execution, node: defn.StepNode, ctx: Context) -> StepRun:
        spec = node.spec
        run = StepRun(name=node.name, type=node.type, start=now(),
                      display_name=spec.get("DisplayName"), description=spec.get("Description"))
        self.set_step(execution, run, "Executing")
        step_root = self.service.work_dir / execution.id / node.name
        log_path = self.service.work_dir / execution.id / "logs" / f"{node.name}.log"
        try:
            if node.type == "Condition":
                outcome = defn.evaluate_conditions(spec["Arguments"].get("Conditions", []), ctx)
                ctx.step_properties[node.name] = {"Outcome": outcome}
                self.set_step(execution, run, "Succeeded", end=now(),
                               metadata={"Condition": {"Outcome": "True" if outcome else "False"}})
            elif node.type == "Fail":
                message = defn.to_text(defn.resolve(spec.get("Arguments", {}).get("ErrorMessage", ""), ctx))
                ctx.step_properties[node.name] = {}
                self.set_step(execution, run, "Failed", end=now(), failure_reason=message[:1024] or "Fail step",
                               metadata={"Fail": {"ErrorMessage": message}})
            elif node.type in ("Processing", "Tuning"):
                self._run_job_step(execution, node, ctx, run, step_root, log_path)
            elif node.type == "RegisterModel":
                args = defn.resolve(spec["Arguments"], ctx)
                package_arn = self._register_model(execution, args)
                ctx.step_properties[node.name] = {"ModelPackageArn": package_arn}
                self.set_step(execution, run, "Succeeded", end=now(), metadata={"RegisterModel": {"Arn": package_arn}})
            else:
                raise StepFailed(f"Step type {node.type} is not supported by the local pipeline executor")
        except StepStopped:
            self.set_step(execution, run, "Stopped", end=now())
        except (StepFailed, ResolutionError, DefinitionError) as exc:
            self.set_step(execution, run, "Failed", end=now(), failure_reason=str(exc)[:1024])
        except ClientError as exc:
            self.set_step(execution, run, "Failed", end=now(), failure_reason=f"{exc}"[:1024])
        except Exception as exc:
            log.exception("step %s of %s crashed", node.name, execution.arn)
            self.set_step(execution, run, "Failed", end=now(),
                           failure_reason=f"Local executor error: {type(exc).__name__}: {exc}"[:1024])
        return run


    def _run_job_step(self, execution: Execution, node: defn.StepNode, ctx: Context, run: StepRun,
                      step_root: Path, log_path: Path) -> None:
        spec = node.spec
        args = defn.resolve(spec["Arguments"], ctx)
        key = defn.cache_key(execution.pipeline_name, node.name, node.type, args)
        cache = spec.get("CacheConfig") or {}
        hit = self.service.cache.lookup(key, defn.parse_expire_after(cache.get("ExpireAfter"))) if cache.get("Enabled") else None
        # Property files are read by SageMaker Pipelines itself: with the pipeline execution role.
        s3 = self.service.role_client(execution.role_arn, "s3")
        if hit is not None:
            properties = hit["properties"]
            ctx.step_properties[node.name] = properties
            self._load_property_files(ctx, spec, properties, None, s3)
            self.set_step(execution, run, "Succeeded", end=now(), metadata=hit["metadata"],
                           cache_source=hit["execution_arn"])
            return
        if node.type == "Processing":
            name = jobs.job_name("pipelines", execution.id, node.name)
            request = {**args, "ProcessingJobName": name}
            role_arn = args.get("RoleArn")
        else:
            name = jobs.job_name(execution.id, node.name, limit=32)
            request = {**args, "HyperParameterTuningJobName": name}
            role_arn = (args.get("TrainingJobDefinition") or {}).get("RoleArn")
        # What SageMaker Pipelines sends SageMaker for the step, checked as SageMaker checks it.
        self.service.authorize_job(execution, "CreateProcessingJob" if node.type == "Processing"
                                   else "CreateHyperParameterTuningJob", request)
        runtime = self._job_runtime(execution, role_arn, node.name)
        if node.type == "Processing":
            metadata = {"ProcessingJob": {"Arn": arn("processing-job", name)}}
            self.set_step(execution, run, "Executing", metadata=metadata)
            properties = jobs.run_processing(node.name, args, step_root, log_path, runtime, name)
            # From S3, as SageMaker Pipelines reads them (never the container's local copy).
            self._load_property_files(ctx, spec, properties, None, s3)
        else:
            metadata = {"TuningJob": {"Arn": arn("hyper-parameter-tuning-job", name)}}
            self.set_step(execution, run, "Executing", metadata=metadata)
            properties = tuning.run_tuning(
                node.name, args, step_root, log_path.parent / node.name, runtime, name,
                seed=_tuning_seed(execution.pipeline_name, node.name, args),
                max_parallel_trials=self.service.max_parallel_trials,
                on_trial=lambda trial: self.service.notify(execution, f"{node.name}/{trial.name}", trial.status),
            )
        ctx.step_properties[node.name] = properties
        if cache.get("Enabled"):
            self.service.cache.store(key, execution.arn, node.name, properties, metadata)
        self.set_step(execution, run, "Succeeded", end=now(), metadata=metadata)


    def _load_property_files(self, ctx: Context, spec: dict, properties: dict, root: Path | None, s3) -> None:
        if spec.get("PropertyFiles"):
            for file_name, document in jobs.load_property_files(spec, properties, root, s3).items():
                ctx.property_files[(spec["Name"], file_name)] = document


    def shared_job_env(self, program: Path) -> tuple[dict[str, str], dict[str, str]]:
        """What every job's environment shares (no role credentials: each job brings its own), and
        the Ray settings of a one-host job (the shared head); the warm pool starts with them too."""
        env = self.service.image.environment(program)
        env.update({
            "AWS_ENDPOINT_URL": self.service.gateway.url,
            "AWS_DEFAULT_REGION": jobs.REGION,
            "AWS_REGION": jobs.REGION,
            "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        })
        env.update(self.service.job_env)
        if self.service.ray_env is not None:
            shared_ray_env = dict(self.service.ray_env)
        elif self.service.ray_address:
            shared_ray_env = ray_client_env(self.service.ray_address)
        else:
            shared_ray_env = {}
        return env, shared_ray_env

    def _job_runtime(self, execution: Execution, role_arn: str | None, step: str) -> JobRuntime:
        """Everything a job of this execution runs with; the one place a job's environment is built:
        the image's environment, and the job's role session (SageMaker hands the job the role it
        was created with)."""
        image = self.service.image
        program = image.program_dir()  # the image's WORKDIR as of this job's start
        env, shared_ray_env = self.shared_job_env(program)
        session = f"{step}-{execution.id}"
        credentials = self.service.role_credentials(role_arn, session)
        env.update(credentials.env() if credentials is not None else DUMMY_CREDENTIALS)
        # Ray workers inherit the head's environment, not the job's: hand them the job's AWS
        # settings the way Ray's own job submission does (a job-level runtime_env), so actors reach
        # the local gateway as every node's environment does on SageMaker.
        worker_env = {k: v for k, v in env.items() if k.startswith("AWS_")}
        env["RAY_JOB_CONFIG_JSON_ENV_VAR"] = json.dumps({"runtime_env": {"env_vars": worker_env}})

        def register(process: subprocess.Popen) -> None:
            execution.processes.add(process)
            if execution.stop_event.is_set():  # stopped between the check and the start
                kill_process_tree(process)

        return JobRuntime(python=str(image.python), workdir=program, base_env=env, shared_ray_env=shared_ray_env,
                          cluster_ray_env=CLUSTER_RAY_ENV, stop_event=execution.stop_event,
                          register_process=register, unregister_process=execution.processes.discard,
                          # SageMaker moves a job's inputs and outputs, and ships its logs, with the
                          # job's role.
                          s3_factory=lambda: self.service.role_client(role_arn, "s3", session),
                          logs_factory=lambda: self.service.role_client(role_arn, "logs", session),
                          warm=self.service.warm_pool)


    def _register_model(self, execution: Execution, args: dict) -> str:
        sagemaker = self.service.role_client(execution.role_arn, "sagemaker")
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


def _tuning_seed(pipeline_name: str, step_name: str, args: dict) -> int:
    """The random search's seed: the search itself (ranges, limits, static values), not the data,
    so the same pipeline tries the same candidates on every dataset."""
    search = [pipeline_name, step_name, args.get("HyperParameterTuningJobConfig"),
              args.get("TrainingJobDefinition", {}).get("StaticHyperParameters")]
    return int(hashlib.sha256(json.dumps(search, sort_keys=True, default=str).encode()).hexdigest()[:8], 16)
