"""Approval tokens and Slack request signatures, without AWS."""
from __future__ import annotations

import time

import pytest

from mlops_shared.approval_tokens import TokenError, issue_token, verify_token
from mlops_shared.approvals import parse_emails, parse_slack_approvers
from mlops_shared.slack import SlackSignatureError, compute_signature, verify_request

KEY = "a-test-key-that-is-long-enough-0123456789"
ARN = "arn:aws:sagemaker:us-east-1:123456789012:model-package/ray-mlops-models/3"


def make(**overrides):
    args = dict(model_package_arn=ARN, action="approve", approver="alice@example.com", channel="email",
                ttl_seconds=3600)
    args.update(overrides)
    return issue_token(KEY, **args)


def test_round_trip_carries_every_claim_and_is_url_safe():
    token = make(action="reject")
    claims = verify_token(KEY, token)
    assert (claims.model_package_arn, claims.action, claims.approver, claims.channel) == (
        ARN, "reject", "alice@example.com", "email")
    assert claims.expires_at - time.time() == pytest.approx(3600, abs=5)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_every_token_has_its_own_nonce():
    assert verify_token(KEY, make()).nonce != verify_token(KEY, make()).nonce


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-10] + ("A" if t[-10] != "A" else "B") + t[-9:],  # signature changed (a full 6-bit char)
    lambda t: "x" + t,                                           # payload changed
    lambda t: t.replace(".", ""),                                 # no separator
    lambda t: t + ".extra",
])
def test_altered_tokens_are_refused(mutate):
    with pytest.raises(TokenError):
        verify_token(KEY, mutate(make()))


def _standard_alphabet(part: str) -> str:
    return part.replace("-", "+").replace("_", "/")


def _token_with_both_alphabets() -> str:
    """A token whose payload or signature holds `-` or `_`, so the standard alphabet spells it differently."""
    for _ in range(200):
        token = make()
        if _standard_alphabet(token) != token:
            return token
    raise AssertionError("no token with a url-safe-only character in 200 tries")


def _with_nonzero_trailing_bits(part: str) -> str:
    """The same bytes with the unused low bits of the last character set: decoders ignore them."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}.get(len(part) % 4)
    assert unused_bits, "a part whose length is a multiple of 4 has no unused bits"
    last = alphabet.index(part[-1])
    return part[:-1] + alphabet[last | 1]


@pytest.mark.parametrize("variant", [
    "padded payload", "padded signature", "standard alphabet", "leading space", "trailing newline",
    "inner whitespace", "trailing bits", "percent-encoded",
])
def test_only_the_canonical_spelling_of_a_token_is_accepted(variant):
    token = _token_with_both_alphabets()
    payload, signature = token.split(".")
    spelled = {
        "padded payload": f"{payload}{'=' * (-len(payload) % 4) or '=='}.{signature}",
        "padded signature": f"{payload}.{signature}=",
        "standard alphabet": _standard_alphabet(token),
        "leading space": " " + token,
        "trailing newline": token + "\n",
        "inner whitespace": f"{payload[:5]} {payload[5:]}.{signature}",
        "trailing bits": f"{payload}.{_with_nonzero_trailing_bits(signature)}",
        "percent-encoded": token.replace("-", "%2D", 1) if "-" in token else token.replace("_", "%5F", 1),
    }[variant]
    assert spelled != token
    verify_token(KEY, token)  # the canonical one is fine
    with pytest.raises(TokenError, match="malformed"):
        verify_token(KEY, spelled)


def test_other_key_is_refused_and_expiry_is_enforced():
    with pytest.raises(TokenError, match="signature"):
        verify_token("another-key-that-is-long-enough-987654", make())
    with pytest.raises(TokenError, match="expired"):
        verify_token(KEY, make(ttl_seconds=10), now=time.time() + 11)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        make(action="delete")
    with pytest.raises(ValueError):
        make(channel="fax")
    with pytest.raises(ValueError):
        issue_token("short", model_package_arn=ARN, action="approve", approver="a", channel="email", ttl_seconds=1)


def test_slack_signature_matches_slacks_documented_example():
    body = ("token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
            "&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
            "&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
            "&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
    secret = "8f742231b10e8888abcd99yyyzzz85a5"
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert compute_signature(secret, "1531420618", body) == expected
    verify_request(secret, timestamp="1531420618", signature=expected, raw_body=body, now=1531420618 + 60)
    with pytest.raises(SlackSignatureError, match="Stale"):
        verify_request(secret, timestamp="1531420618", signature=expected, raw_body=body, now=1531420618 + 301)
    with pytest.raises(SlackSignatureError, match="Invalid"):
        verify_request(secret, timestamp="1531420618", signature=expected, raw_body=body + "x", now=1531420618)
    with pytest.raises(SlackSignatureError, match="not configured"):
        verify_request("REPLACE_ME", timestamp="1531420618", signature=expected, raw_body=body, now=1531420618)


def test_approver_lists_parse():
    assert parse_emails(" Alice@Example.com, bob@example.com,,alice@example.com") == (
        "alice@example.com", "bob@example.com")
    assert parse_slack_approvers("U1=Alice@Example.com, U2=bob@example.com") == {
        "U1": "alice@example.com", "U2": "bob@example.com"}
    with pytest.raises(ValueError, match="SLACKUSERID=email"):
        parse_slack_approvers("U1")


def test_a_key_ring_verifies_links_of_the_previous_key_and_notices_a_rotation():
    from mlops_shared.approval_tokens import KeyRing

    old, new, newest = KEY, "the-key-after-the-first-rotation-0123", "the-key-after-the-second-rotation-45"
    versions = [(old,)]
    loads = []
    now = [0.0]

    def load():
        loads.append(now[0])
        return versions[-1]

    ring = KeyRing(load, max_age=300, min_reload_seconds=10, clock=lambda: now[0])
    before = make()
    assert verify_token(ring, before).approver == "alice@example.com"

    versions.append((new, old))          # rotated: AWSCURRENT new, AWSPREVIOUS old
    now[0] = 30.0
    after = issue_token(new, model_package_arn=ARN, action="approve", approver="bob@example.com",
                        channel="email", ttl_seconds=3600)
    assert verify_token(ring, after).approver == "bob@example.com"  # unknown signature: keys re-read once
    assert verify_token(ring, before).approver == "alice@example.com"  # minted before the rotation: still valid
    assert issue_token(ring, model_package_arn=ARN, action="reject", approver="a", channel="email",
                       ttl_seconds=60).count(".") == 1
    assert verify_token(new, issue_token(ring, model_package_arn=ARN, action="reject", approver="a",
                                         channel="email", ttl_seconds=60)).action == "reject"  # signs with the current key

    versions.append((newest, new))       # rotated twice: the first key revoked once the cache is read again
    now[0] = 331.0
    with pytest.raises(TokenError, match="signature"):
        verify_token(ring, before)
    assert verify_token(ring, after).approver == "bob@example.com"
    assert loads == [0.0, 30.0, 331.0]

    # Forged links do not become a stream of key reads: one forced re-read per 10 s at most.
    for _ in range(5):
        with pytest.raises(TokenError, match="signature"):
            verify_token(ring, issue_token("a-forger-key-that-is-long-enough-xx", model_package_arn=ARN,
                                           action="approve", approver="m", channel="email", ttl_seconds=60))
    assert loads == [0.0, 30.0, 331.0]
    with pytest.raises(TokenError, match="expired"):   # the previous key never extends a link's life
        verify_token(ring, after, now=time.time() + 3601)
