"""Signed, expiring approval tokens.

A token names one decision that one approver may take once: the model package, the action
(approve/reject), who may take it, over which channel (email link or Slack button), a random nonce
(single use is enforced by recording the nonce when the decision is taken) and an expiry.

Wire format: ``<base64url(JSON payload)>.<base64url(HMAC-SHA256(key, payload bytes))>`` with the
padding stripped, so the token sits in a URL path segment or a Slack button value unescaped. Only
that exact spelling is accepted (no padding, whitespace, standard alphabet or stray trailing bits).
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ACTIONS = ("approve", "reject")
CHANNELS = ("email", "slack")
# A Slack message goes to a channel, not to a person: who pressed the button is learned from Slack's
# signed interaction payload, so Slack tokens carry this marker instead of an approver identity.
SLACK_ANY_APPROVER = "slack-approver"


class TokenError(ValueError):
    """The token cannot be honoured; `reason` is safe to show to the person holding it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ApprovalToken:
    model_package_arn: str
    action: str
    approver: str
    channel: str
    nonce: str
    expires_at: int  # Unix seconds, UTC

    def to_payload(self) -> dict:
        return {"p": self.model_package_arn, "a": self.action, "u": self.approver, "c": self.channel,
                "n": self.nonce, "e": self.expires_at}

    @classmethod
    def from_payload(cls, payload: dict) -> "ApprovalToken":
        try:
            token = cls(model_package_arn=str(payload["p"]), action=str(payload["a"]),
                        approver=str(payload["u"]), channel=str(payload["c"]), nonce=str(payload["n"]),
                        expires_at=int(payload["e"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise TokenError("This approval link is malformed.") from exc
        if token.action not in ACTIONS or token.channel not in CHANNELS:
            raise TokenError("This approval link is malformed.")
        return token


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_URLSAFE_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _b64decode(text: str) -> bytes:
    """The bytes of `text`, only when `text` is exactly how `_b64encode` writes them.

    base64 decoders accept many spellings of the same bytes (padding, standard-alphabet `+/`,
    whitespace, non-zero trailing bits); one token must have one spelling, or a used link could be
    replayed as a "different" string (caches, logs, rate limits key on the text). So the decoded
    bytes are re-encoded and must give back the input.
    """
    if not text or not set(text) <= _URLSAFE_ALPHABET:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise ValueError("not the canonical encoding")
    return data


def _signature(key: bytes, payload_bytes: bytes) -> bytes:
    return hmac.new(key, payload_bytes, hashlib.sha256).digest()


def _key_bytes(key: str | bytes) -> bytes:
    key_bytes = key.encode() if isinstance(key, str) else key
    if len(key_bytes) < 16:
        # A short key would make forged links guessable; refuse rather than sign weakly.
        raise ValueError("the approval token key must be at least 16 bytes")
    return key_bytes


class KeyRing:
    """The signing key and the one it replaced: links minted before a rotation of the key keep
    working until they expire. `load` returns (current, previous...) — for Secrets Manager the
    AWSCURRENT and AWSPREVIOUS versions. Keys are cached for `max_age` seconds and loaded again at
    once when a token's signature matches none of them (a rotation this process has not seen yet).
    To revoke every open link, rotate twice: the key that signed them is then neither."""

    def __init__(self, load: Callable[[], Sequence[str | bytes]], max_age: float = 300.0,
                 min_reload_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self._load, self._max_age, self._min_reload, self._clock = load, max_age, min_reload_seconds, clock
        self._keys: tuple = ()
        self._loaded_at = -float("inf")

    def keys(self, force: bool = False) -> tuple:
        age = self._clock() - self._loaded_at
        # A forced reload (an unknown signature) at most every few seconds: forged links must not
        # turn into a stream of Secrets Manager calls.
        if not self._keys or age > self._max_age or (force and age > self._min_reload):
            keys = tuple(k for k in self._load() if k)
            if not keys:
                raise ValueError("no approval token key is configured")
            self._keys, self._loaded_at = keys, self._clock()
        return self._keys

    @property
    def current(self) -> str | bytes:
        return self.keys()[0]


TokenKey = str | bytes | Sequence[str | bytes] | KeyRing


def _signing_key(key: TokenKey) -> str | bytes:
    if isinstance(key, KeyRing):
        return key.current
    return key if isinstance(key, (str, bytes)) else key[0]


def issue_token(key: TokenKey, *, model_package_arn: str, action: str, approver: str, channel: str,
                ttl_seconds: int, now: float | None = None) -> str:
    """A new signed token for one approver, one action, one package; valid for `ttl_seconds`."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}, got {channel!r}")
    issued = time.time() if now is None else now
    token = ApprovalToken(model_package_arn=model_package_arn, action=action, approver=approver,
                          channel=channel, nonce=secrets.token_urlsafe(16),
                          expires_at=int(issued + ttl_seconds))
    payload_bytes = json.dumps(token.to_payload(), separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64encode(payload_bytes)}.{_b64encode(_signature(_key_bytes(_signing_key(key)), payload_bytes))}"


def _signed_by_one_of(keys: Sequence[str | bytes], payload_bytes: bytes, signature: bytes) -> bool:
    # Every key is tried (no early exit), each comparison in constant time.
    matches = [hmac.compare_digest(signature, _signature(_key_bytes(k), payload_bytes)) for k in keys]
    return any(matches)


def verify_token(key: TokenKey, token: str, *, now: float | None = None, allow_expired: bool = False) -> ApprovalToken:
    """The token's claims, after checking its signature (constant time) and its expiry.

    `key` is one key, a sequence of keys (current first) or a KeyRing. `allow_expired` skips only
    the expiry (a request for fresh links names its approver by a link we signed). Raises TokenError
    with a reason fit for the person holding the link.
    """
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 4096:
        raise TokenError("This approval link is malformed.")
    payload_part, signature_part = token.split(".")
    try:
        payload_bytes = _b64decode(payload_part)
        signature = _b64decode(signature_part)
    except (binascii.Error, ValueError) as exc:
        raise TokenError("This approval link is malformed.") from exc
    if isinstance(key, KeyRing):
        signed = _signed_by_one_of(key.keys(), payload_bytes, signature) or (
            _signed_by_one_of(key.keys(force=True), payload_bytes, signature))
    else:
        signed = _signed_by_one_of((key,) if isinstance(key, (str, bytes)) else tuple(key), payload_bytes, signature)
    if not signed:
        raise TokenError("This approval link is not valid: its signature does not match.")
    try:
        payload = json.loads(payload_bytes)
    except ValueError as exc:  # cannot happen for a token we signed; kept for defence in depth
        raise TokenError("This approval link is malformed.") from exc
    if not isinstance(payload, dict):
        raise TokenError("This approval link is malformed.")
    claims = ApprovalToken.from_payload(payload)
    current = time.time() if now is None else now
    if current >= claims.expires_at and not allow_expired:
        expired_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(claims.expires_at))
        raise TokenError(f"This approval link expired at {expired_at}.")
    return claims
