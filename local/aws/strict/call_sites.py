"""Who calls what: the components of the product and the principal each runs as.

Principals are named as in `template.yaml` (SAM names a function's generated role
`<Function>Role`, a state machine's `<StateMachine>Role`, and the role EventBridge uses to start a
state machine `<StateMachine><Event>Role`). The local face must hand each component the
credentials of the principal listed here; the table entries say which operations each one calls.
"""
from __future__ import annotations

from local.aws.strict.operation_table import Caller

# -- principals ---------------------------------------------------------------------------------
START_PIPELINE_ROLE = "StartPipelineFunctionRole"
START_SCORING_ROLE = "StartScoringFunctionRole"
PIPELINE_STATUS_ROLE = "PipelineStatusFunctionRole"
NOTIFY_APPROVAL_ROLE = "NotifyApprovalFunctionRole"
APPROVAL_API_ROLE = "ApprovalApiFunctionRole"
DEPLOY_PREPARE_ROLE = "DeployPrepareFunctionRole"
DEPLOY_SMOKE_TEST_ROLE = "DeploySmokeTestFunctionRole"
DEPLOY_NOTIFY_ROLE = "DeployNotifyFunctionRole"
RECORD_LINEAGE_ROLE = "RecordLineageFunctionRole"
DRIFT_ALARM_ROLE = "DriftAlarmFunctionRole"
DRIFT_MONITOR_SCHEDULE_ROLE = "DriftMonitorScheduleRole"
DEPLOY_STATE_MACHINE_ROLE = "DeployStateMachineRole"
DEPLOY_RULE_ROLES = "DeployStateMachinePackageApprovedRole / DeployStateMachinePackageRejectedRole"
PIPELINE_EXECUTION_ROLE = "PipelineExecutionRole"
PIPELINE_JOBS_ROLE = "PipelineJobsRole"
MODEL_EXECUTION_ROLE = "ModelExecutionRole"
EVENTS_SERVICE = "events.amazonaws.com"
API_GATEWAY_SERVICE = "apigateway.amazonaws.com"
LOCAL_ADMINISTRATOR = "local administrator (cloud.json credentials)"
LOCAL_SERVICE = "the local runtime standing in for an AWS service (no IAM check on AWS)"


def _at(component: str, principal: str, where: str) -> Caller:
    return Caller(component, principal, where)


# -- functions/ (each handler runs with its function's role) -------------------------------------
INTAKE = _at("start_pipeline", START_PIPELINE_ROLE, "functions/shared/mlops_shared/intake.py, dataset_config.py")
QUARANTINE = _at("start_pipeline", START_PIPELINE_ROLE, "functions/shared/mlops_shared/quarantine.py (s3.copy)")
INTAKE_IDEMPOTENCY = _at("start_pipeline", START_PIPELINE_ROLE, "functions/start_pipeline/app.py (Powertools idempotency)")
INTAKE_NOTIFY = _at("start_pipeline", START_PIPELINE_ROLE, "functions/shared/mlops_shared/notifications.py")
SCORING = _at("start_scoring", START_SCORING_ROLE, "functions/shared/mlops_shared/scoring.py, serving.py, champion.py")
SCORING_QUARANTINE = _at("start_scoring", START_SCORING_ROLE, "functions/shared/mlops_shared/quarantine.py (s3.copy)")
SCORING_IDEMPOTENCY = _at("start_scoring", START_SCORING_ROLE, "functions/start_scoring/app.py (Powertools idempotency)")
SCORING_NOTIFY = _at("start_scoring", START_SCORING_ROLE, "functions/shared/mlops_shared/notifications.py")
PIPELINE_STATUS = _at("pipeline_status", PIPELINE_STATUS_ROLE, "functions/shared/mlops_shared/pipeline_failures.py")
PIPELINE_STATUS_NOTIFY = _at("pipeline_status", PIPELINE_STATUS_ROLE, "functions/shared/mlops_shared/notifications.py")
NOTIFY_APPROVAL = _at("notify_approval", NOTIFY_APPROVAL_ROLE,
                      "functions/shared/mlops_shared/approvals.py (incl. per-recipient notification claims)")
NOTIFY_APPROVAL_SECRETS = _at("notify_approval", NOTIFY_APPROVAL_ROLE, "functions/notify_approval/app.py (Powertools parameters)")
APPROVAL_LINKS = _at("approval links", f"{NOTIFY_APPROVAL_ROLE} / {APPROVAL_API_ROLE} (presigned with their credentials)",
                     "functions/shared/mlops_shared/approvals.py (generate_presigned_url, fetched by the browser)")
APPROVAL_API = _at("approval_api", APPROVAL_API_ROLE, "functions/shared/mlops_shared/approvals.py")
APPROVAL_API_INVOKES = _at("approval_api", APPROVAL_API_ROLE,
                           "functions/approval_api/app.py (its own Slack hand-off; the notify function for fresh links)")
APPROVAL_API_SECRETS = _at("approval_api", APPROVAL_API_ROLE, "functions/approval_api/app.py (Powertools parameters)")
DEPLOY_PREPARE = _at("deploy_prepare", DEPLOY_PREPARE_ROLE, "functions/shared/mlops_shared/deployment.py")
SMOKE_TEST = _at("deploy_smoke_test", DEPLOY_SMOKE_TEST_ROLE, "functions/shared/mlops_shared/smoke_test.py")
DEPLOY_NOTIFY = _at("deploy_notify", DEPLOY_NOTIFY_ROLE, "functions/shared/mlops_shared/deployment.py, notifications.py")
FUNCTION_LOGS = _at("Lambda function logs", "the function's role (AWSLambdaBasicExecutionRole)",
                    "local/aws/lambda_runtime.py (/aws/lambda/<function>, one stream per worker)")
RECORD_LINEAGE = _at("record_lineage", RECORD_LINEAGE_ROLE, "functions/shared/mlops_shared/lineage.py")
DEPLOY_NOTIFY_LINEAGE = _at("deploy_notify", DEPLOY_NOTIFY_ROLE,
                            "functions/shared/mlops_shared/lineage.py (record_deployment)")
DRIFT_ALARM = _at("drift_alarm", DRIFT_ALARM_ROLE,
                  "functions/shared/mlops_shared/drift_response.py (drift reports, notification)")
DRIFT_ALARM_RETRAIN = _at("drift_alarm", DRIFT_ALARM_ROLE,
                          "functions/shared/mlops_shared/drift_response.py (RetrainOnDrift: serving package, "
                          "labelled dataset versions, the training pipeline)")
FUNCTION_DEAD_LETTERS = _at("Lambda asynchronous invocation", "the function's role (DeadLetterQueue)",
                            "template.yaml DeadLetterQueue of StartPipeline/PipelineStatus/NotifyApproval")

# -- statemachines/deploy.asl.json --------------------------------------------------------------
STATE_MACHINE = _at("deploy state machine", DEPLOY_STATE_MACHINE_ROLE, "statemachines/deploy.asl.json")

# -- EventBridge and API Gateway targets in template.yaml ---------------------------------------
EVENTBRIDGE_TO_LAMBDA = _at("EventBridge rules", EVENTS_SERVICE,
                            "template.yaml DatasetUploaded, PipelineFailed, ModelPendingApproval (Lambda permission)")
EVENTBRIDGE_TO_STATE_MACHINE = _at("EventBridge rules", DEPLOY_RULE_ROLES, "template.yaml PackageApproved, PackageRejected")
EVENTBRIDGE_DEAD_LETTERS = _at("EventBridge rules", EVENTS_SERVICE, "template.yaml DeadLetterConfig (queue policies)")
API_GATEWAY = _at("ApprovalApi", API_GATEWAY_SERVICE, "template.yaml ApprovalApiFunction Api events (Lambda permission)")

# -- EventBridge Scheduler targets (the schedule's role; locally: local/aws/scheduler.py) -------------
DRIFT_MONITOR_SCHEDULE = _at("DriftMonitorSchedule", DRIFT_MONITOR_SCHEDULE_ROLE,
                             "template.yaml DriftMonitorSchedule universal target (StartPipelineExecution)")
SCHEDULE_DEAD_LETTERS = _at("DriftMonitorSchedule", DRIFT_MONITOR_SCHEDULE_ROLE,
                            "template.yaml DriftMonitorSchedule DeadLetterConfig (local/aws/scheduler.py)")

# -- SageMaker Pipelines with PipelineExecutionRole (locally: local/executor.py) ------------------
PIPELINES = _at("SageMaker Pipelines", PIPELINE_EXECUTION_ROLE, "local/aws/sagemaker_pipelines/runner.py, jobs/pipeline_definition.json")

# -- jobs/ (PipelineJobsRole, in each job's environment) ----------------------------------------
INGEST = _at("ingest job", PIPELINE_JOBS_ROLE, "jobs/ingest.py")
OFFLINE_STORE_DIRECT = _at("ingest job", PIPELINE_JOBS_ROLE, "jobs/feature_store_writers.py (IngestionMode OfflineStore)")
PREPROCESS = _at("preprocess job", PIPELINE_JOBS_ROLE, "jobs/preprocess.py")
TRAIN = _at("train job", PIPELINE_JOBS_ROLE, "jobs/train.py (record_experiment)")
EVALUATE = _at("evaluate job", PIPELINE_JOBS_ROLE, "jobs/evaluate.py")
DRIFT = _at("drift monitor job", PIPELINE_JOBS_ROLE, "jobs/drift.py (serving package, capture, report, metrics)")
SCORE = _at("score job", PIPELINE_JOBS_ROLE, "jobs/score.py (model download, streamed read, upload_file, quarantine copy)")
JOB_DATA = _at("SageMaker job data movement", PIPELINE_JOBS_ROLE,
               "local/aws/sagemaker_pipelines/jobs.py (ProcessingInputs/Outputs, training channels, model upload)")
JOB_LOGS = _at("SageMaker job logs", PIPELINE_JOBS_ROLE,
               "local/aws/sagemaker_pipelines/job_logs.py (/aws/sagemaker/ProcessingJobs, TrainingJobs)")
FEATURE_STORE_OFFLINE = _at("Feature Store offline store", f"{PIPELINE_JOBS_ROLE} (the feature group's RoleArn)",
                            "local/aws/featurestore_runtime/offline_replication.py")

# -- SageMaker hosting with ModelExecutionRole (locally: local/endpoints.py) ----------------------
HOSTING = _at("SageMaker hosting", MODEL_EXECUTION_ROLE, "local/aws/endpoints.py (model artifact download)")
DATA_CAPTURE = _at("SageMaker data capture", MODEL_EXECUTION_ROLE, "local/aws/data_capture.py (capture files)")

# -- the person at the keyboard: CLI and local cloud --------------------------------------------
PROVISION = _at("local provisioning", LOCAL_ADMINISTRATOR, "local/aws/stack/provisioner.py")
CLOUD = _at("local cloud", LOCAL_ADMINISTRATOR, "local/cloud.py")
ROLE_CREDENTIALS = _at("local cloud", LOCAL_ADMINISTRATOR,
                       "local/aws/identities.py (the role session of each component)")
CLI = _at("mlops CLI", LOCAL_ADMINISTRATOR, "local/cli/*.py")
CONSOLE = _at("local console", LOCAL_ADMINISTRATOR, "local/console/data.py (read-only)")

# -- local stand-ins for AWS services (AWS makes these calls itself) -----------------------------
EVENT_DISPATCH = _at("local event delivery", LOCAL_SERVICE, "local/aws/eventbridge.py")
EXECUTOR_INTERNAL = _at("local pipeline executor", LOCAL_SERVICE, "local/aws/sagemaker_pipelines/service.py (definition, status events)")
ENDPOINTS_INTERNAL = _at("local hosting", LOCAL_SERVICE, "local/aws/endpoints.py (endpoint config, model, package)")
ALARM_EVALUATOR = _at("local CloudWatch alarms", LOCAL_SERVICE,
                      "local/aws/alarms.py (DescribeAlarms, GetMetricStatistics, SetAlarmState, SNS actions, events)")
SCHEDULER_INTERNAL = _at("local EventBridge Scheduler", LOCAL_SERVICE, "local/aws/scheduler.py (ListSchedules, GetSchedule)")
FEATURE_STORE_INTERNAL = _at("local Feature Store runtime", LOCAL_SERVICE, "local/aws/featurestore_runtime/service.py (group description)")
