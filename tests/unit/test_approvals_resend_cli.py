"""`mlops approvals resend`: the CLI asks the stack's notify function for fresh approval links (run
with the project environment: the CLI needs the jobs' packages; the handler runs in-process against
a moto server, behind Lambda's Invoke API on 127.0.0.1)."""
from __future__ import annotations

import json

import pytest

from local.cli import build_parser
from tests.approval_world import APPROVERS, TOKEN_KEY, LambdaService, build_world, lambda_context, load_handler
from tests.unit.functions.test_notify_approval import links, pending_event, sent_emails
from mlops_shared.approval_tokens import verify_token


@pytest.fixture
def world(aws, monkeypatch, evaluation_outputs):
    return build_world(aws, monkeypatch, evaluation_outputs)


@pytest.fixture
def notify():
    return load_handler("notify_approval")


def test_mlops_approvals_resend_emails_fresh_links_once_an_hour(world, notify, monkeypatch, capsys):
    """`mlops approvals resend` (against AWS: the notify function behind Lambda's Invoke API)."""
    service = None

    notify.lambda_handler(pending_event(world.model_package_arn), lambda_context)
    assert len(sent_emails()) == 2
    service = LambdaService(None, functions={"notify-approval": notify.lambda_handler})
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", service.start())
    try:
        def mlops(*argv) -> tuple[int, dict]:
            args = build_parser().parse_args(["approvals", "resend", world.model_package_arn, "--aws",
                                              "--function", "notify-approval", *argv])
            code = args.func(args)
            return code, json.loads(capsys.readouterr().out)

        code, answer = mlops()
        assert code == 0 and answer["emails_sent"] == sorted(APPROVERS)  # fresh links despite the first email
        messages = sent_emails()[2:]
        assert sorted(str(m["To"]) for m in messages) == sorted(APPROVERS)
        for message in messages:  # each approver's own, new links
            html_text = message.get_body(preferencelist=("html",)).get_content()
            claims = verify_token(TOKEN_KEY, links(html_text)["Approve"].rsplit("/", 1)[1])
            assert claims.approver == str(message["To"])

        code, answer = mlops("--to", APPROVERS[0])
        assert code == 0 and answer["emails_sent"] == [] and answer["already_sent"] == [APPROVERS[0]]
        code, answer = mlops("--to", "mallory@evil.example")
        assert code == 1 and answer["status_code"] == 403
        assert len(sent_emails()) == 4

        world.client("sagemaker").update_model_package(ModelPackageArn=world.model_package_arn,
                                                       ModelApprovalStatus="Approved")
        code, answer = mlops()
        assert code == 1 and "no longer waiting for approval" in answer["reason"]
    finally:
        service.stop()
