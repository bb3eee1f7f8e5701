"""EventBridge Scheduler for the local cloud: the schedules moto keeps as bookkeeping, fired on time.

moto stores `AWS::Scheduler::Schedule`s (CreateSchedule, GetSchedule, ListSchedules) but never
runs one. `LocalScheduler` reads them (as the local runtime, like the service itself) and fires
each when its expression is due:

* `rate(N minute|minutes|hour|hours|day|days)`: every N units from the schedule's StartDate (else
  from when the runtime first saw it); `cron(min hour day-of-month month day-of-week year)` in
  the schedule's ScheduleExpressionTimezone (EventBridge's six fields: `*`, `?`, `,`, `-`, `/`,
  names such as MON or JAN, `L` as the last day of the month; `W` and `#` are refused with a clear
  error); `at(yyyy-mm-ddThh:mm:ss)`: once. StartDate and EndDate bound every kind.
* State DISABLED schedules never fire (and `run_schedule` refuses them); FlexibleTimeWindow
  `FLEXIBLE` fires at a random moment within MaximumWindowInMinutes after the due time.
* The target: a universal target `arn:aws:scheduler:::aws-sdk:<service>:<apiAction>` calls that
  API with the target's `Input` as its request, under the schedule's RoleArn (a session
  `scheduler.amazonaws.com` gets through the role's trust policy, local.aws.identities), through
  the strict face like any caller. Scheduler's context attributes in the Input
  (`<aws.scheduler.schedule-arn>`, `<aws.scheduler.scheduled-time>`, `<aws.scheduler.execution-id>`,
  `<aws.scheduler.attempt-number>`) are filled in. SQS targets get SendMessage with the Input as
  the body.
* RetryPolicy: a throttled, 5xx or unreachable target is retried up to MaximumRetryAttempts
  (locally at most `max_retries`, a short back-off) within MaximumEventAgeInSeconds; a refusal (4xx)
  is not retried, as Scheduler does not retry it either. A run that failed for good is logged and,
  with DeadLetterConfig, sent to that queue with the schedule's role (the payload as body,
  Scheduler's ERROR_CODE / ERROR_MESSAGE / EXECUTION_ID / SCHEDULE_ARN / TARGET_ARN attributes).

`run_schedule(name)` fires one now (tests, `LocalCloud.run_schedule`). From another process,
`mlops local schedule run NAME` does what works on AWS too: it creates a one-time copy of the
schedule (`at()` now, ActionAfterCompletion DELETE) that this runtime fires at its next poll and
then deletes. The polling thread wakes every `poll_seconds` (5 s locally).
"""
from __future__ import annotations

import calendar
import json
import logging
import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from local.aws.periodic import PeriodicWork

log = logging.getLogger(__name__)

UNIVERSAL_TARGET = re.compile(r"^arn:aws[\w-]*:scheduler:::aws-sdk:([a-z0-9-]+):([A-Za-z0-9]+)$")
# Service names of the universal target (the AWS SDK's) that differ from boto3's.
SDK_SERVICE_NAMES = {"sfn": "stepfunctions", "eventbridge": "events", "cloudwatchlogs": "logs"}
RETRYABLE_STATUS = 500


class ScheduleError(RuntimeError):
    pass


# -- expressions --------------------------------------------------------------------------------
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_CRON = re.compile(r"^cron\((.+)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}


def _field_values(text: str, low: int, high: int, names: dict[str, int] | None = None) -> set[int] | None:
    """The values a cron field allows (None: any, for `*` and `?`)."""
    if text in ("*", "?"):
        return None
    values: set[int] = set()
    for part in text.split(","):
        if "#" in part or part.endswith("W") or (part.endswith("L") and part != "L"):
            raise ScheduleError(f"cron field {text!r}: W, # and nL are not supported by the local scheduler")
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            start, end = _value(a, names), _value(b, names)
        else:
            start = _value(part, names)
            end = high if step != 1 else start
        if not (low <= start <= high and low <= end <= high):
            raise ScheduleError(f"cron field {text!r}: values must lie in {low}-{high}")
        values.update(range(start, end + 1, step))
    return values


def _value(text: str, names: dict[str, int] | None) -> int:
    upper = text.upper()
    if names and upper in names:
        return names[upper]
    return int(text)


@dataclass(frozen=True)
class Cron:
    minutes: set[int] | None
    hours: set[int] | None
    days: set[int] | None
    last_day: bool
    months: set[int] | None
    weekdays: set[int] | None  # 1 = Sunday .. 7 = Saturday, as EventBridge counts
    years: set[int] | None

    @classmethod
    def parse(cls, body: str) -> "Cron":
        fields = body.split()
        if len(fields) != 6:
            raise ScheduleError(f"cron({body}): EventBridge cron expressions have six fields "
                                "(minutes hours day-of-month month day-of-week year)")
        minute, hour, day, month, weekday, year = fields
        if day != "?" and weekday != "?":
            raise ScheduleError(f"cron({body}): one of day-of-month and day-of-week must be '?'")
        return cls(_field_values(minute, 0, 59), _field_values(hour, 0, 23),
                   None if day == "L" else _field_values(day, 1, 31), day == "L",
                   _field_values(month, 1, 12, _MONTHS), _field_values(weekday, 1, 7, _DAYS),
                   _field_values(year, 1970, 2199))

    def matches(self, t: datetime) -> bool:
        def ok(values, value):
            return values is None or value in values
        weekday = (t.isoweekday() % 7) + 1  # Monday=1..Sunday=7 -> Sunday=1..Saturday=7
        last = calendar.monthrange(t.year, t.month)[1]
        return (ok(self.minutes, t.minute) and ok(self.hours, t.hour) and ok(self.months, t.month)
                and ok(self.years, t.year) and ok(self.weekdays, weekday)
                and (t.day == last if self.last_day else ok(self.days, t.day)))

    def next_after(self, after: datetime) -> datetime | None:
        """The first matching minute strictly after `after` (aware), within ten years."""
        t = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
        limit = after + timedelta(days=3660)
        while t <= limit:
            if (self.months is not None and t.month not in self.months) or \
                    (self.years is not None and t.year not in self.years):
                t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif self.hours is not None and t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif self.minutes is not None and t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        return None

    def _day_matches(self, t: datetime) -> bool:
        weekday = (t.isoweekday() % 7) + 1
        last = calendar.monthrange(t.year, t.month)[1]
        return ((self.weekdays is None or weekday in self.weekdays)
                and (t.day == last if self.last_day else (self.days is None or t.day in self.days)))


def next_fire_time(expression: str, after: datetime, *, anchor: datetime, tz: str = "UTC") -> datetime | None:
    """When `expression` is next due strictly after `after` (aware UTC); None when never again.
    `anchor` is where a rate() counts from."""
    expression = expression.strip()
    zone = ZoneInfo(tz or "UTC")
    if match := _RATE.match(expression):
        amount, unit = int(match.group(1)), match.group(2).rstrip("s")
        if amount < 1:
            raise ScheduleError(f"{expression}: the rate must be at least 1")
        period = amount * _UNIT_SECONDS[unit]
        elapsed = (after - anchor).total_seconds()
        periods = 0 if elapsed < 0 else int(elapsed // period) + 1
        return anchor + timedelta(seconds=periods * period)
    if match := _AT.match(expression):
        when = datetime.fromisoformat(match.group(1)).replace(tzinfo=zone).astimezone(timezone.utc)
        return when if when > after else None
    if match := _CRON.match(expression):
        found = Cron.parse(match.group(1)).next_after(after.astimezone(zone))
        return found.astimezone(timezone.utc) if found else None
    raise ScheduleError(f"{expression!r} is not a rate(), cron() or at() expression")


# -- the runtime --------------------------------------------------------------------------------
@dataclass
class FireResult:
    schedule: str
    execution_id: str
    status: str  # "succeeded" | "failed"
    attempts: int
    response: dict | None = None
    error: str | None = None
    dead_lettered: bool = False


@dataclass
class _Tracked:
    next_due: datetime | None
    anchor: datetime
    fire_at: datetime | None = None
    expression: str = ""
    fired: list[FireResult] = field(default_factory=list)


class LocalScheduler:
    def __init__(self, endpoint_url: str, identities: Any = None, *, poll_seconds: float = 5.0,
                 max_retries: int = 3, retry_delay_seconds: float = 0.2,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.endpoint_url = endpoint_url
        self.identities = identities  # None: the environment's credentials (bare gateway, tests)
        self.poll_seconds = poll_seconds
        self.max_retries = max_retries
        self.retry_delay_seconds = retry_delay_seconds
        self.clock = clock
        self._tracked: dict[str, _Tracked] = {}
        # The next poll tries again; a broken schedule must not stop the others.
        self._polls = PeriodicWork("local-scheduler", self.tick, poll_seconds, logger=log,
                                   failure_message="local scheduler: polling the schedules failed")
        self.history: list[FireResult] = []

    # -- clients --------------------------------------------------------------------------------
    def _client(self, service: str, credentials=None):
        import boto3
        from botocore.config import Config

        from local.aws.stack.model import REGION

        keys = credentials.client_kwargs() if credentials is not None else {}
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=REGION,
                            config=Config(retries={"max_attempts": 1}), **keys)

    def _runtime(self, service: str):
        return self._client(service, self.identities.runtime if self.identities is not None else None)

    def _as_role(self, service: str, role_arn: str, schedule_arn: str):
        if self.identities is None:
            return self._client(service)
        credentials = self.identities.role_credentials(role_arn, "scheduler.amazonaws.com", "scheduler",
                                                       source_arn=schedule_arn)
        return self._client(service, credentials)

    # -- reading the schedules ------------------------------------------------------------------
    def schedules(self) -> list[dict]:
        scheduler = self._runtime("scheduler")
        found, token = [], None
        while True:
            page = scheduler.list_schedules(**({"NextToken": token} if token else {}))
            for summary in page.get("Schedules", []):
                found.append(scheduler.get_schedule(Name=summary["Name"], GroupName=summary.get("GroupName", "default")))
            token = page.get("NextToken")
            if not token:
                return found

    def describe(self, name: str, group: str = "default") -> dict:
        return self._runtime("scheduler").get_schedule(Name=name, GroupName=group)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> "LocalScheduler":
        self._polls.start()
        return self

    def stop(self) -> None:
        self._polls.stop()

    def tick(self) -> list[FireResult]:
        """Fires every schedule that is due now; returns what it fired."""
        now = self.clock()
        results = []
        for schedule in self.schedules():
            key = f"{schedule.get('GroupName', 'default')}/{schedule['Name']}"
            try:
                tracked = self._track(key, schedule, now)
            except ScheduleError as exc:
                log.error("schedule %s: %s (never fired locally)", key, exc)
                continue
            if schedule.get("State", "ENABLED") != "ENABLED" or tracked.fire_at is None or now < tracked.fire_at:
                continue
            scheduled_time = tracked.next_due
            end = _aware(schedule.get("EndDate"))
            if end is None or scheduled_time <= end:
                results.append(self.fire(schedule, scheduled_time))
            if _AT.match(schedule["ScheduleExpression"].strip()) and schedule.get("ActionAfterCompletion") == "DELETE":
                self._runtime("scheduler").delete_schedule(Name=schedule["Name"],
                                                           GroupName=schedule.get("GroupName", "default"))
                self._tracked.pop(key, None)
                continue
            tracked.next_due = next_fire_time(schedule["ScheduleExpression"], scheduled_time, anchor=tracked.anchor,
                                              tz=schedule.get("ScheduleExpressionTimezone") or "UTC")
            tracked.fire_at = self._fire_at(schedule, tracked.next_due)
        return results

    def _track(self, key: str, schedule: dict, now: datetime) -> _Tracked:
        tracked = self._tracked.get(key)
        if tracked is not None and tracked.expression == schedule["ScheduleExpression"]:
            return tracked
        start = _aware(schedule.get("StartDate"))
        anchor = start or now
        after = max(now, start) if start else now
        if start and start > now:
            after = start - timedelta(microseconds=1)
        created = _aware(schedule.get("CreationDate"))
        if _AT.match(schedule["ScheduleExpression"].strip()) and created is not None:
            # A one-time schedule is due once from its creation, however late this poll sees it.
            after = min(after, created.replace(microsecond=0) - timedelta(seconds=1))
        due = next_fire_time(schedule["ScheduleExpression"], after, anchor=anchor,
                             tz=schedule.get("ScheduleExpressionTimezone") or "UTC")
        tracked = _Tracked(due, anchor, self._fire_at(schedule, due), schedule["ScheduleExpression"])
        self._tracked[key] = tracked
        return tracked

    @staticmethod
    def _fire_at(schedule: dict, due: datetime | None) -> datetime | None:
        if due is None:
            return None
        window = schedule.get("FlexibleTimeWindow") or {}
        if window.get("Mode") == "FLEXIBLE":
            return due + timedelta(seconds=random.uniform(0, 60 * float(window.get("MaximumWindowInMinutes", 1))))
        return due

    # -- firing ---------------------------------------------------------------------------------
    def run_schedule(self, name: str, group: str = "default") -> FireResult:
        """Fires `name` now, whatever its expression says (a DISABLED schedule is refused)."""
        schedule = self.describe(name, group)
        if schedule.get("State", "ENABLED") != "ENABLED":
            raise ScheduleError(f"schedule {group}/{name} is {schedule.get('State')}: enable it to run it")
        return self.fire(schedule, self.clock())

    def fire(self, schedule: dict, scheduled_time: datetime) -> FireResult:
        target = schedule["Target"]
        execution_id = str(uuid.uuid4())
        policy = target.get("RetryPolicy") or {}
        retries = min(int(policy.get("MaximumRetryAttempts", 185)), self.max_retries)
        max_age = float(policy.get("MaximumEventAgeInSeconds", 86400))
        started = time.monotonic()
        attempt, error_code, error_message = 0, "", ""
        while True:
            attempt += 1
            payload = _context(target.get("Input"), schedule["Arn"], scheduled_time, execution_id, attempt)
            try:
                response = self._invoke(target, payload, schedule["Arn"])
            except Exception as exc:  # every failure is reported, none is lost
                error_code, error_message, retryable = _describe_error(exc)
                log.warning("schedule %s: attempt %d of %s failed: %s: %s", schedule["Name"], attempt,
                            target["Arn"], error_code, error_message)
                if retryable and attempt <= retries and time.monotonic() - started < max_age:
                    time.sleep(self.retry_delay_seconds * attempt)
                    continue
                result = FireResult(schedule["Name"], execution_id, "failed", attempt,
                                    error=f"{error_code}: {error_message}")
                result.dead_lettered = self._dead_letter(schedule, payload, execution_id, error_code, error_message)
                log.error("schedule %s: run %s failed for good after %d attempt(s)%s: %s", schedule["Name"],
                          execution_id, attempt, " (dead-lettered)" if result.dead_lettered else "", result.error)
                break
            else:
                result = FireResult(schedule["Name"], execution_id, "succeeded", attempt, response=response)
                log.info("schedule %s fired %s (run %s)", schedule["Name"], target["Arn"], execution_id)
                break
        self.history.append(result)
        return result

    def _invoke(self, target: dict, payload: str | None, schedule_arn: str) -> dict:
        arn = target["Arn"]
        if match := UNIVERSAL_TARGET.match(arn):
            service = SDK_SERVICE_NAMES.get(match.group(1), match.group(1))
            client = self._as_role(service, target["RoleArn"], schedule_arn)
            method = xform_name(match.group(2)[0].upper() + match.group(2)[1:])
            if not hasattr(client, method):
                raise ScheduleError(f"{arn}: {service} has no API action {match.group(2)}")
            parameters = json.loads(payload) if payload else {}
            response = getattr(client, method)(**parameters)
            response.pop("ResponseMetadata", None)
            return response
        if arn.split(":")[2] == "sqs":
            sqs = self._as_role("sqs", target["RoleArn"], schedule_arn)
            return {"MessageId": sqs.send_message(QueueUrl=self._queue_url(arn), MessageBody=payload or "")["MessageId"]}
        raise ScheduleError(f"target {arn}: the local scheduler fires universal (aws-sdk) and SQS targets only")

    def _queue_url(self, queue_arn: str) -> str:
        """The queue's URL on this endpoint (Scheduler sends by ARN: the role needs no sqs:GetQueueUrl)."""
        _, _, _, _, account, name = queue_arn.split(":", 5)
        return f"{self.endpoint_url.rstrip('/')}/{account}/{name}"

    def _dead_letter(self, schedule: dict, payload: str | None, execution_id: str, code: str, message: str) -> bool:
        queue_arn = ((schedule["Target"].get("DeadLetterConfig") or {}).get("Arn"))
        if not queue_arn:
            return False
        try:
            sqs = self._as_role("sqs", schedule["Target"]["RoleArn"], schedule["Arn"])
            url = self._queue_url(queue_arn)
            attributes = {"ERROR_CODE": code, "ERROR_MESSAGE": message[:1000] or code, "EXECUTION_ID": execution_id,
                          "SCHEDULE_ARN": schedule["Arn"], "TARGET_ARN": schedule["Target"]["Arn"]}
            sqs.send_message(QueueUrl=url, MessageBody=payload or "{}",
                             MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()})
            return True
        except Exception:
            log.exception("schedule %s: the failed run %s could not be dead-lettered to %s", schedule["Name"],
                          execution_id, queue_arn)
            return False


def _context(text: str | None, schedule_arn: str, scheduled_time: datetime, execution_id: str, attempt: int) -> str | None:
    if text is None:
        return None
    values = {"aws.scheduler.schedule-arn": schedule_arn,
              "aws.scheduler.scheduled-time": scheduled_time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "aws.scheduler.execution-id": execution_id, "aws.scheduler.attempt-number": str(attempt)}
    for name, value in values.items():
        text = text.replace(f"<{name}>", value)
    return text


def _describe_error(exc: Exception) -> tuple[str, str, bool]:
    """(code, message, retryable): throttling, 5xx and unreachable targets are retried."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 400)
        code = error.get("Code", "ClientError")
        return code, error.get("Message", str(exc)), status >= RETRYABLE_STATUS or "Throttl" in code
    if isinstance(exc, BotoCoreError):
        return type(exc).__name__, str(exc), True
    return type(exc).__name__, str(exc), False


def _aware(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
