"""The local face: the AWS stand-ins moto lacks (`local.aws`), their composition (`local.cloud`), and
the `mlops` CLI (`local.cli`). Never imported by `functions/` or `jobs/`.

| where | what it plays |
|---|---|
| `local/aws/gateway.py` | the one AWS endpoint (moto in-process + routes for what moto cannot serve) |
| `local/aws/stack/` | CloudFormation: `template.yaml` provisioned into moto (`resources/<service>.py` per type) |
| `local/aws/eventbridge.py` | EventBridge delivery to targets moto cannot invoke (Lambda, Step Functions, SNS) |
| `local/aws/lambda_runtime.py` | Lambda: each handler in warm worker processes of its own |
| `local/aws/api_gateway.py` | API Gateway: the template's API events as proxy events on 127.0.0.1 |
| `local/aws/sagemaker_pipelines/` | SageMaker Pipelines: the deployed definition JSON run on local Ray |
| `local/aws/featurestore_runtime/` | SageMaker Feature Store runtime (PutRecord & co, offline store replication) |
| `local/aws/endpoints.py` | SageMaker hosting + sagemaker-runtime InvokeEndpoint (model server processes) |
| `local/aws/model_registry.py` | the Model Registry's "Model Package State Change" events |
| `local/ray_head.py` | the one Ray head the pipeline jobs share |
| `local/jobs_image.py` | the jobs image without Docker: the environment jobs, the Ray head and model servers run in |
| `local/outbox.py` | the inboxes: every email and Slack message the system sends, as files |

The local runtime uses the project's Lambda layer (`functions/shared`, package `mlops_shared`) the
way a Lambda does (`/opt/python` is on a function's path): it puts the layer on `sys.path`.
"""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = REPO_ROOT / "functions" / "shared"
if str(LAYER_DIR) not in sys.path:
    sys.path.append(str(LAYER_DIR))
