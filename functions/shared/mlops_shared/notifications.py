"""Human-readable notifications published to the project's SNS topic.

Subscribers (email, chat integrations, queues) can filter on the ``event_type`` message attribute.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3

SUBJECT_MAX = 100  # SNS limit for email subjects


@dataclass(frozen=True)
class Notification:
    event_type: str
    subject: str
    body: str

    def published_subject(self) -> str:
        # SNS rejects subjects with line breaks or over 100 characters; keep them printable ASCII.
        text = " ".join(self.subject.split())
        text = text.encode("ascii", errors="replace").decode("ascii")
        return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."


def publish(notification: Notification, topic_arn: str, sns: Any = None) -> str:
    """Publishes ``notification`` to ``topic_arn``; returns the SNS message id."""
    sns = sns or boto3.client("sns")
    response = sns.publish(
        TopicArn=topic_arn,
        Subject=notification.published_subject(),
        Message=notification.body,
        MessageAttributes={"event_type": {"DataType": "String", "StringValue": notification.event_type}},
    )
    return response["MessageId"]
