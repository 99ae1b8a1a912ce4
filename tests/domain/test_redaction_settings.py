"""A project's redaction settings, and redaction of whole task events with their flags."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given

from tests.strategies import task_events
from z4j_domain.errors import InvalidInput
from z4j_domain.redaction import (
    DEFAULT_POLICY,
    REDACTED,
    RedactionSettings,
    redact,
    redact_event,
)
from z4j_domain.tasks import EventKind, TaskEvent

NOW = datetime(2026, 11, 29, tzinfo=UTC)


def _event(**fields: object) -> TaskEvent:
    return TaskEvent(id="e1", task_id="t1", kind=EventKind.RECEIVED, timestamp=NOW, **fields)  # type: ignore[arg-type]


def test_settings_round_trip_and_are_normalised() -> None:
    """Entries are de-duplicated and sorted; the JSON form reads back equal."""
    settings = RedactionSettings.from_dict(
        {"extra_key_patterns": ["pin", "pin", "re:^x-"], "fully_redacted_tasks": ["b.t", "a.t"]}
    )
    assert settings.extra_key_patterns == ("pin", "re:^x-")
    assert settings.fully_redacted_tasks == ("a.t", "b.t")
    assert RedactionSettings.from_dict(settings.to_dict()) == settings
    assert RedactionSettings.from_dict({}) == RedactionSettings()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a JSON object"),
        ({"colour": []}, "unknown redaction setting"),
        ({"extra_key_patterns": "pin"}, "must be a list of strings"),
        ({"extra_key_patterns": [1]}, "must be a list of strings"),
        ({"extra_value_patterns": ["re:("]}, "not a valid regular expression"),
        ({"extra_value_patterns": ["("]}, "not a valid regular expression"),
        ({"fully_redacted_tasks": ["  "]}, "non-blank"),
        ({"extra_key_patterns": ["x" * 501]}, "at most 500"),
        ({"extra_key_patterns": [f"k{i}" for i in range(101)]}, "at most 100"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(data: object, message: str) -> None:
    """Anything malformed, including a pattern that does not compile, is InvalidInput."""
    with pytest.raises(InvalidInput, match=message):
        RedactionSettings.from_dict(data)


def test_the_policy_is_built_once_per_settings() -> None:
    """Equal settings share one compiled policy."""
    a = RedactionSettings(extra_key_patterns=("pin",))
    b = RedactionSettings(extra_key_patterns=["pin"])
    assert a.policy() is b.policy()
    assert a.policy().extra_key_patterns == ("pin",)


def test_project_patterns_and_whole_tasks_apply() -> None:
    """An extra key pattern and a fully redacted task name take effect in the policy."""
    policy = RedactionSettings(
        extra_key_patterns=("pin",), fully_redacted_tasks=("bank.transfer",)
    ).policy()
    event = redact_event(_event(name="shop.pay", kwargs={"pin": "1234", "amount": 5}), policy)
    assert event.kwargs == {"pin": REDACTED, "amount": 5}
    whole = redact_event(_event(name="bank.transfer", args=[1, "x"], kwargs={"to": "y"}), policy)
    assert whole.args == [REDACTED, REDACTED]
    assert whole.kwargs == {"to": REDACTED}
    assert whole.arguments_redacted


def test_an_event_with_a_secret_gets_it_replaced_and_flagged() -> None:
    """Secrets in arguments set both flags; one in the traceback only the payload's."""
    event = _event(
        kwargs={"password": "hunter2", "dsn": "postgres://app:s3cret@db/app"},
        traceback="Traceback ...\nAuthorization: Bearer abcdef123456",
    )
    out = redact_event(event, DEFAULT_POLICY)
    assert "hunter2" not in repr(out)
    assert "s3cret" not in repr(out)
    assert "abcdef123456" not in repr(out)
    assert out.redacted
    assert out.arguments_redacted
    assert not out.truncated
    assert not out.arguments_truncated
    only_trace = redact_event(_event(traceback="password=hunter2"), DEFAULT_POLICY)
    assert only_trace.redacted
    assert not only_trace.arguments_redacted


def test_a_task_marked_in_code_is_redacted_whole() -> None:
    """``fully_redacted`` redacts every argument whatever the task's name."""
    out = redact_event(
        _event(name="any", args=[1], result=None), DEFAULT_POLICY, fully_redacted=True
    )
    assert out.args == [REDACTED]
    assert out.arguments_redacted


@given(event=task_events())
def test_redacting_an_event_twice_changes_nothing_and_keeps_flags(event: TaskEvent) -> None:
    """The brain's second pass keeps the agent's flags and redacts nothing new."""
    once = redact_event(event, DEFAULT_POLICY)
    assert redact_event(once, DEFAULT_POLICY) == once
    for name in ("redacted", "truncated", "arguments_redacted", "arguments_truncated"):
        assert getattr(once, name) >= getattr(event, name), name


@given(event=task_events())
def test_an_event_changes_only_when_a_flag_says_why(event: TaskEvent) -> None:
    """Nothing to redact: the very same event comes back; otherwise a flag is set."""
    out = redact_event(event, DEFAULT_POLICY)
    if out is not event:
        assert out.redacted or out.truncated
        return
    for name in ("args", "kwargs", "result", "exception", "traceback"):
        value = getattr(event, name)
        assert redact(value, DEFAULT_POLICY).value is value, name


def test_a_clean_event_is_returned_as_it_is() -> None:
    """The common case costs no copy."""
    event = _event(name="shop.add", args=[1, 2], kwargs={"currency": "EUR"})
    assert redact_event(event, DEFAULT_POLICY) is event
