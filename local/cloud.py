"""The local cloud: `template.yaml` running on one machine, with moto playing AWS.

`LocalCloud` starts, in order: the jobs image's environment (built on first use, `local.jobs_image`),
the gateway (moto in this process plus the routes moto lacks), the featurestore runtime, one Ray
head, the pipeline executor, the local endpoints, the outbox, the API server, then provisions the
template and starts the lambda runtime and the event dispatcher. It stops them in reverse order.
While it runs, `<state>/cloud.json` tells other processes (`mlops local run`) where it is.

    with LocalCloud(".mlops-local") as cloud:
        s3 = boto3.client("s3", **cloud.client_kwargs())
        ...
"""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from local.aws.alarms import AlarmEvaluator
from local.aws.api_gateway import ApiServer
from local.aws.endpoints import LocalEndpoints
from local.aws.eventbridge import EventDispatcher, wait_until_idle
from local.aws.featurestore_runtime.service import FeatureStoreRuntimeApp
from local.aws.gateway import LocalGateway
from local.aws.lineage import LineageService
from local.aws.lineage_jobs import LocalJobDescriptions
from local.aws.lambda_runtime import LambdaRuntime, local_aws_environment
from local.aws.model_registry import ModelPackageEvents
from local.aws.sagemaker_pipelines.service import PipelineExecutor
from local.aws.sagemaker_pipelines.warm_pool import enabled_by_default as warm_jobs_enabled
from local.aws.identities import Identities
from local.aws.scheduler import FireResult, LocalScheduler
from local.aws.stack.model import ACCOUNT_ID, REGION, Stack
from local.aws.stack.provisioner import provision
from local.cloud_file import cloud_file, remove_cloud_file, write_cloud_file
from local.jobs_image import default_image
from local.outbox import Outbox
from local.ray_head import RayHead
from local import REPO_ROOT

log = logging.getLogger(__name__)



# Local values of template parameters (explicit `parameters` win; names the template does not
# declare are ignored). Those without a Default name AWS artefacts (an ECR image, the S3 copy of the
# pipeline definition): locally the executor runs the jobs from this checkout and the provisioner
# reads the definition file itself, so these are only names. The approval addresses make the local
# flow send its approval email to the outbox.
LOCAL_PARAMETERS = {
    "JobImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/ray-sagemaker-mlops-jobs:local",
    "PipelineDefinitionBucket": "local-pipeline-definitions",
    "PipelineDefinitionKey": "pipeline/definition-local.json",
    "DriftPipelineDefinitionKey": "pipeline/drift-definition-local.json",
    "ScoringPipelineDefinitionKey": "pipeline/scoring-definition-local.json",
    "ApproverEmails": "approver@example.com",
    "SenderEmail": "mlops-approvals@example.com",
}


class CloudError(RuntimeError):
    pass


class LocalCloud:
    def __init__(
        self,
        state_dir: str | Path = ".mlops-local",
        dispatch_events: bool = True,
        replication_delay_seconds: float = 0.0,
        max_concurrent_executions: int = 1,
        template: str | Path = REPO_ROOT / "template.yaml",
        *,
        stack_name: str = "mlops-local",
        parameters: dict[str, Any] | None = None,
        start_ray: bool = True,
        ray_address: str | None = None,
        ray_num_cpus: int | None = None,
        write_cloud_file: bool = True,
        strict: bool = True,
        record_decisions: bool = False,
    ):
        self.state_dir = Path(state_dir).resolve()
        self.dispatch_events = dispatch_events
        self.replication_delay_seconds = replication_delay_seconds
        self.max_concurrent_executions = max_concurrent_executions
        self.template = Path(template)
        if not self.template.is_absolute():
            self.template = (Path.cwd() / self.template) if (Path.cwd() / self.template).exists() else REPO_ROOT / self.template
        self.stack_name = stack_name
        self.parameters = dict(parameters or {})
        self.start_ray = start_ray
        self.external_ray_address = ray_address  # a Ray head someone else runs (shared across clouds)
        self.ray_num_cpus = ray_num_cpus
        self.write_cloud_file = write_cloud_file
        # The strict face (docs/strict-face.md): every part acts as its own IAM principal and every
        # request is refused where AWS would refuse it. Off only for debugging (`--no-strict`).
        self.strict = strict
        self.record_decisions = record_decisions  # the face keeps every authorization (statement coverage)
        self.identities: Identities | None = None
        self.face = None
        self.jobs_image = None
        self.gateway = None
        self.stack: Stack | None = None
        self.executor = None
        self.ray_head = None
        self.featurestore = None
        self.endpoints = None
        self.outbox = None
        self.lambda_runtime: LambdaRuntime | None = None
        self.dispatcher = None
        self.model_package_events = None
        self.api_server = None
        self.console = None
        self.scheduler: LocalScheduler | None = None
        self.alarm_evaluator: AlarmEvaluator | None = None
        self._stops: list[tuple[str, Callable[[], None]]] = []
        self._previous_moto_port: str | None = None
        self._owns_cloud_file = False

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> "LocalCloud":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "LocalCloud":
        for sub in ("logs", "work", "outbox", "dlq"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request is noise here
        try:
            self._start_parts()
        except BaseException:
            self.stop()
            raise
        return self

    def _on_stop(self, name: str, stop: Callable[[], None]) -> None:
        self._stops.append((name, stop))

    def _start_parts(self) -> None:
        started = time.monotonic()
        self._log_refusals(self.state_dir / "logs" / "strict-face.log")
        self._log_emulator_internals(self.state_dir / "logs" / "emulators.log")
        # Jobs, the Ray head and the model servers run in the jobs image's environment.
        self.jobs_image = default_image()
        self.gateway = LocalGateway().start()
        self._on_stop("gateway", self.gateway.stop)
        # moto's Step Functions runner sends its service calls (Lambda tasks included) to MOTO_PORT.
        self._previous_moto_port = os.environ.get("MOTO_PORT")
        os.environ["MOTO_PORT"] = str(self.gateway.port)
        self._on_stop("moto port", self._restore_moto_port)
        # AWS-managed policies (SAM attaches AWSLambdaBasicExecutionRole, ...) exist in moto only
        # when it loads them as its IAM backend is created: before the reset below.
        os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
        # moto keeps its state per process: start from a clean account like a fresh stack would.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"),
                               timeout=30).read()
        self._start_identities()

        self.featurestore = FeatureStoreRuntimeApp(self.endpoint_url,
                                                   replication_delay_seconds=self.replication_delay_seconds,
                                                   identities=self.identities)
        self.gateway.route_path(r"/FeatureGroup/.+", self.featurestore)
        self.gateway.route_path(r"/BatchGetRecord", self.featurestore)
        self._on_stop("featurestore", self.featurestore.close)

        self.model_package_events = ModelPackageEvents(self.gateway, credentials=self._runtime_credentials)
        self.model_package_events.install()
        self.lineage = LineageService(self.gateway, account=ACCOUNT_ID).install()  # moto has no lineage API

        self.lambda_runtime = LambdaRuntime({}, self.endpoint_url, log_dir=self.state_dir / "logs" / "lambda",
                                            dead_letter=self._dead_letter,
                                            credentials_for=self._function_credentials if self.strict else None,
                                            cloudwatch_logs=True)
        self.lambda_runtime.install(self.gateway)
        self._on_stop("lambda runtime", self.lambda_runtime.close)

        self.endpoints = LocalEndpoints(self.gateway, self.state_dir / "work" / "endpoints",
                                        identities=self.identities, image=self.jobs_image)
        self.endpoints.install()
        self._on_stop("endpoints", self.endpoints.shutdown)

        self.outbox = Outbox(self.state_dir).start()
        self._on_stop("outbox", self.outbox.stop)

        # Bound now: the template's API URLs point here.
        self.api_server = ApiServer(self.lambda_runtime, strict=self.face)
        self._on_stop("api server", self.api_server.stop)

        self.stack = provision(self.template, self.endpoint_url, stack_name=self.stack_name,
                               parameters=self.parameters, api_base_url=self.api_server.url,
                               local_parameters=LOCAL_PARAMETERS, credentials=self.client_kwargs(with_endpoint=False))
        self.lambda_runtime.functions.update(self.stack.functions)
        self.lambda_runtime.prepare()  # a missing runtime interpreter fails the start, not the first event
        self.api_server.add_routes(self.stack.api_routes)
        self.api_server.start()
        self._configure_outbox()

        self._start_pipeline_runtime()

        self._start_console()
        if self.dispatch_events:
            self.dispatcher = EventDispatcher(self.stack.event_targets, self.endpoint_url, self.lambda_runtime,
                                              self.state_dir / "dlq", identities=self.identities,
                                              strict=self.face).start()
            self._on_stop("event dispatcher", self.dispatcher.stop)
        self._start_schedules_and_alarms()
        self._write_cloud_file()
        log.info("local cloud up in %.1f s: %s (state in %s)", time.monotonic() - started, self.endpoint_url, self.state_dir)

    def _start_schedules_and_alarms(self) -> None:
        """EventBridge Scheduler and CloudWatch alarm evaluation, which moto only keeps books of
        (local.aws.scheduler, local.aws.alarms); both act as the local runtime, targets as their roles."""
        self.scheduler = LocalScheduler(self.endpoint_url, self.identities).start()
        self._on_stop("scheduler", self.scheduler.stop)
        self.alarm_evaluator = AlarmEvaluator(self.endpoint_url, self._runtime_credentials).start()
        self._on_stop("alarm evaluator", self.alarm_evaluator.stop)

    def run_schedule(self, name: str, group: str = "default") -> FireResult:
        """Fires the EventBridge Scheduler schedule `name` now (its target, as its role)."""
        if self.scheduler is None:
            raise CloudError("local cloud not started")
        return self.scheduler.run_schedule(name, group)

    def evaluate_alarms(self, names: list[str] | None = None) -> list:
        """Evaluates the CloudWatch alarms now (else every 10 s); returns the state changes."""
        if self.alarm_evaluator is None:
            raise CloudError("local cloud not started")
        return self.alarm_evaluator.evaluate_now(names)

    def _start_pipeline_runtime(self) -> None:
        ray_address = self.external_ray_address
        if ray_address is None and self.start_ray:
            self.ray_head = RayHead(num_cpus=self.ray_num_cpus, state_dir=self.state_dir, image=self.jobs_image).start()
            self._on_stop("ray head", self.ray_head.stop)
            ray_address = self.ray_head.address
        self.executor = PipelineExecutor(
            self.gateway,
            self.state_dir / "work" / "pipelines",
            ray_address,
            self.max_concurrent_executions,
            self.pipeline_substitutions(),
            identities=self.identities,
            strict=self.face,
            image=self.jobs_image,
            # Warm job workers (sagemaker_pipelines/warm_pool.py) unless MLOPS_LOCAL_WARM_JOBS=0.
            warm_jobs=warm_jobs_enabled(),
        )
        self.executor.install()
        # The jobs the executor ran, described to the lineage recorder (moto never hears of them).
        LocalJobDescriptions(self.gateway, self.executor, self.jobs_image.fingerprint).install()
        self._on_stop("pipeline executor", self.executor.shutdown)

    def _start_console(self) -> None:
        """The read-only console (local/console), acting as the local administrator through the
        gateway with the AWS APIs only, like any other client of this cloud."""
        from local.aws.identities import aws_client
        from local.console.app import ConsoleServer
        from local.console.data import ConsoleData

        credentials = self.identities.administrator
        clients = {service: aws_client(service, self.endpoint_url, credentials)
                   for service in ("sagemaker", "s3", "logs", "dynamodb")}
        try:
            pipeline = self.pipeline_name()
        except CloudError:  # a template without a training pipeline: the console shows no executions
            pipeline = None
        outputs = dict(self.stack.outputs)
        self.console = ConsoleServer(lambda: ConsoleData(clients["sagemaker"], clients["s3"], clients["logs"],
                                                         clients["dynamodb"], outputs, pipeline)).start()
        self._on_stop("console", self.console.stop)

    @property
    def console_url(self) -> str | None:
        return self.console.url if self.console else None

    def pipeline_substitutions(self) -> dict[str, str]:
        """The resolved `Metadata.Mlops.Substitutions` of the template's pipelines (one map)."""
        merged: dict[str, str] = {}
        for values in (self.stack.pipeline_substitutions if self.stack else {}).values():
            merged.update(values)
        return merged

    def _start_identities(self) -> None:
        """The local administrator, the runtime's own identity and, strict, the face that judges
        every request (it needs moto's IAM state, so it comes after the reset)."""
        from local.aws import stepfunctions_credentials
        from local.aws.strict.face import StrictFace

        self.identities = Identities()
        if not self.strict:
            log.warning("strict face OFF: requests are not authenticated, authorized or checked against the "
                        "services' constraints (debugging only)")
            self.gateway.strict = None
            return
        self.face = StrictFace(self.identities, account=ACCOUNT_ID, region=REGION,
                               extra_resource_policies=self._stack_resource_policy,
                               record_decisions=self.record_decisions)
        self.gateway.strict = self.face
        stepfunctions_credentials.use(self.identities)
        # moto's runner is process-wide: a later cloud (or a bare test) must not inherit these identities.
        self._on_stop("state machine credentials", lambda: stepfunctions_credentials.use(None))

    @property
    def _runtime_credentials(self):
        return self.identities.runtime if self.identities is not None else None

    def _function_credentials(self, spec):
        """A session of the function's execution role, as Lambda hands it to the handler."""
        return self.identities.role_credentials(spec.role_arn, "lambda.amazonaws.com", spec.name)

    def _stack_resource_policy(self, prefix: str, resource_arn: str) -> dict | None:
        """Resource policies the stack holds: Lambda permissions of its functions (moto does not
        hold functions it cannot run), bucket and queue policies (`stack.resource_policies`)."""
        if self.stack is None:
            return None
        if prefix == "lambda":
            spec = self.stack.function(resource_arn)
            return spec.resource_policy() if spec is not None else None
        if prefix == "s3":
            return self.stack.resource_policies.get(resource_arn.split("/", 1)[0])
        return self.stack.resource_policies.get(resource_arn)

    def _configure_outbox(self) -> None:
        """Slack webhook secrets get the outbox URL, so messages land in `<state>/outbox/`."""
        secrets = self.client("secretsmanager")
        for resource in self.stack.resources_of_type("AWS::SecretsManager::Secret"):
            if "slack" in resource.logical_id.lower() and "webhook" in resource.logical_id.lower():
                secrets.put_secret_value(SecretId=resource.ref, SecretString=self.outbox.slack_webhook_url)
        for subscription in self.stack.email_subscriptions:
            log.info("email subscription %s on %s recorded, not sent (local mail goes to the outbox)",
                     subscription["endpoint"], subscription["topic_arn"])

    def _restore_moto_port(self) -> None:
        if self._previous_moto_port is None:
            os.environ.pop("MOTO_PORT", None)
        else:
            os.environ["MOTO_PORT"] = self._previous_moto_port

    def stop(self) -> None:
        self._remove_cloud_file()
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception:  # keep stopping the rest: a leaked process is worse than a log line
                log.exception("stopping %s failed", name)

    def _log_refusals(self, path: Path) -> None:
        """Every request the strict face refuses, one line each, where a reader of a failed run looks."""
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        refusals = logging.getLogger("local.aws.strict.refusals")
        refusals.addHandler(handler)
        refusals.setLevel(logging.INFO)

        def stop() -> None:
            refusals.removeHandler(handler)
            handler.close()
        self._on_stop("strict face log", stop)

    # Loggers of the emulators' own machinery, not of anything the system does: moto's Step Functions
    # interpreter logs an ERROR for every optional JSONPath a Choice state tests and finds absent
    # (AWS does not: the state machine behaves as designed), the SAM translator warns about its
    # feature-toggle config. On a terminal they read like failures; in a file they are there for
    # whoever debugs the emulators. The state machine's real outcome is in its execution history.
    EMULATOR_LOGGERS = ("moto.stepfunctions.parser", "samtranslator")

    def _log_emulator_internals(self, path: Path) -> None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        loggers = [logging.getLogger(name) for name in self.EMULATOR_LOGGERS]
        before = [(logger, logger.propagate) for logger in loggers]
        for logger in loggers:
            logger.addHandler(handler)
            logger.propagate = False

        def stop() -> None:
            for logger, propagate in before:
                logger.removeHandler(handler)
                logger.propagate = propagate
            handler.close()
        self._on_stop("emulator log", stop)

    # -- state file -----------------------------------------------------------------------------
    @property
    def cloud_file(self) -> Path:
        return cloud_file(self.state_dir)

    def _write_cloud_file(self) -> None:
        if not self.write_cloud_file:
            return
        write_cloud_file(self.state_dir, self.describe())
        self._owns_cloud_file = True

    def _remove_cloud_file(self) -> None:
        if self._owns_cloud_file:
            remove_cloud_file(self.state_dir)
            self._owns_cloud_file = False

    def describe(self) -> dict:
        return {
            "pid": os.getpid(),
            "endpoint_url": self.endpoint_url,
            "api_url": self.api_url,
            "runtime_endpoint": f"{self.endpoint_url}/endpoints/{{name}}/invocations",
            "outbox_url": self.outbox.url if self.outbox else None,
            "console_url": self.console_url,
            "ray_address": self.ray_address,
            "state_dir": str(self.state_dir),
            "outbox_dir": str(self.outbox_dir),
            "stack": self.stack.to_json() if self.stack else None,
            "started_at": time.time(),
            "strict": self.strict,
            # The person at the keyboard (DESIGN §4): what `mlops` commands act with.
            "credentials": self.identities.administrator.to_json() if self.identities else None,
        }

    # -- what clients need ------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        if self.gateway is None:
            raise CloudError("local cloud not started")
        return self.gateway.url

    @property
    def api_url(self) -> str | None:
        return self.api_server.url if self.api_server else None

    @property
    def outbox_dir(self) -> Path:
        return self.state_dir / "outbox"

    def env(self) -> dict[str, str]:
        """The environment a client process needs to use this cloud (never real AWS)."""
        env = local_aws_environment(self.endpoint_url, credentials=self.identities.administrator
                                    if self.identities else None)
        if self.ray_address:
            env["RAY_ADDRESS"] = self.ray_address
        env["MLOPS_LOCAL_STATE_DIR"] = str(self.state_dir)
        return env

    @property
    def ray_address(self) -> str | None:
        return self.ray_head.address if self.ray_head is not None else self.external_ray_address

    def client_kwargs(self, with_endpoint: bool = True) -> dict[str, str]:
        """boto3 client arguments of the local administrator (the person at the keyboard)."""
        if self.identities is None:
            raise CloudError("local cloud not started")
        kwargs = dict(self.identities.administrator.client_kwargs())
        if with_endpoint:
            kwargs.update(endpoint_url=self.endpoint_url, region_name=REGION)
        return kwargs

    def client(self, service: str):
        import boto3

        return boto3.client(service, **self.client_kwargs())

    # -- waiting --------------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0, interval: float = 0.5,
                 description: str = "condition") -> Any:
        """Polls `predicate` until it returns something truthy; returns it, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {description}")
            time.sleep(interval)

    def wait_for_events(self, timeout: float = 60.0) -> None:
        """Until every event put so far has been delivered (shadow queues empty, nothing in flight)."""
        if self.dispatcher is None:
            return
        if not wait_until_idle(self.dispatcher, timeout=timeout):
            raise TimeoutError(f"events still being delivered after {timeout:.0f} s")

    def pipeline_name(self) -> str:
        """The training pipeline: the stack's `PipelineName` output, as the CLI reads it (the drift
        monitor and scoring pipelines are the stack's other pipelines, each with an output of its own)."""
        name = self.stack.outputs.get("PipelineName")
        if not name:
            raise CloudError("the stack has no PipelineName output (the training pipeline)")
        return name

    def list_executions(self, pipeline_name: str | None = None) -> list[dict]:
        sagemaker = self.client("sagemaker")
        pipeline_name = pipeline_name or self.pipeline_name()
        summaries, token = [], None
        while True:
            kwargs = {"PipelineName": pipeline_name, "MaxResults": 100}
            if token:
                kwargs["NextToken"] = token
            page = sagemaker.list_pipeline_executions(**kwargs)
            summaries += page.get("PipelineExecutionSummaries", [])
            token = page.get("NextToken")
            if not token:
                return summaries

    def wait_for_execution(self, execution_arn: str, timeout: float = 900.0,
                           statuses: tuple[str, ...] = ("Succeeded", "Failed", "Stopped")) -> dict:
        sagemaker = self.client("sagemaker")

        def done():
            description = sagemaker.describe_pipeline_execution(PipelineExecutionArn=execution_arn)
            return description if description["PipelineExecutionStatus"] in statuses else None

        return self.wait_for(done, timeout=timeout, interval=1.0, description=f"{execution_arn} to reach {statuses}")

    def dead_letters(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted((self.state_dir / "dlq").glob("*.json"))]

    def _dead_letter(self, label: str, payload: Any, error: Any) -> None:
        if self.dispatcher is not None:
            self.dispatcher.dead_letter(label, payload, error)
        else:
            path = self.state_dir / "dlq" / f"{time.time():.6f}-{label}.json"
            path.write_text(json.dumps({"label": label, "event": payload, "error": error}, default=str))
