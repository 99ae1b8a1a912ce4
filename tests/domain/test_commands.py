"""Commands: a retry never carries a redaction marker, and the lifecycle never leaves an outcome."""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.strategies import (
    BASE_TIME,
    MARKER_FORMS,
    MARKER_NEAR_MISSES,
    aware_datetimes,
    command_results,
    command_times,
    command_transitions,
    credential_keys,
    harmless_json,
    json_with_marker,
    marker_free_json,
    nest_in_json,
    retry_args,
    retry_countdowns,
    retry_etas,
    retry_events,
    retry_kwargs,
    retry_queue_overrides,
    texts_with_credential,
    texts_with_marker,
)
from z4j_domain.commands import (
    DEFAULT_COMMAND_TIMEOUT,
    MAX_PROBLEMS,
    Action,
    Command,
    CommandKind,
    CommandPart,
    CommandStatus,
    ItemOutcome,
    ItemReport,
    PartReport,
    Progress,
    RetryItem,
    contains_marker,
    plan_retry,
    retry_task_id,
)
from z4j_domain.encoding import canonical_json, storable_json
from z4j_domain.errors import InvalidInput
from z4j_domain.redaction import (
    DEFAULT_POLICY,
    REDACTED,
    TRUNCATED,
    RedactionPolicy,
    redact_event,
)
from z4j_domain.tasks import EventKind, Task, TaskEvent, fold

#: The id a retry publishes under, in tests that do not care.
NEW_ID = "~"  # no secret or marker a strategy draws can be inside it
#: What a marker of any form contains (the Celery agent's cuts only share the opening).
MARKER_FRAGMENTS = ("[z4j redacted", "[z4j truncated", "__z4j_truncated__")
A_YEAR_AND_A_DAY = 366 * 86_400

#: The default policy as the brain applies it, and one with limits small enough to cut.
redaction_policies = st.one_of(
    st.just(DEFAULT_POLICY), st.just(RedactionPolicy(max_depth=2, max_nodes=6))
)


def marked(value: Any) -> bool:
    """Whether a marker fragment is in the canonical JSON text of ``value`` (keys included).

    No fragment holds a character JSON escapes, nor can one start at JSON syntax,
    so this is exactly "some string in ``value`` holds a marker".
    """
    text = canonical_json(value).decode()
    return any(fragment in text for fragment in MARKER_FRAGMENTS)


def task_of(**fields: Any) -> Task:
    """A task known from one ``sent`` event carrying ``fields``."""
    task = fold(
        [TaskEvent(id="e1", task_id="task-1", kind=EventKind.SENT, timestamp=BASE_TIME, **fields)]
    )
    assert task is not None
    return task


def new_command(**fields: Any) -> Command:
    """A pending retry command created at BASE_TIME with the default deadline."""
    values: dict[str, Any] = {
        "id": "cmd-1",
        "project_id": 1,
        "kind": CommandKind.RETRY,
        "params": {"task_id": "task-1"},
        "requested_by": 7,
        "requested_by_name": "alice@example.com",
        "created_at": BASE_TIME,
        "deadline": BASE_TIME + DEFAULT_COMMAND_TIMEOUT,
    }
    values.update(fields)
    return Command(**values)


def strictly_json(value: Any) -> Any:
    """``value`` through strict JSON (no NaN, no infinities): what every store can hold."""
    return json.loads(json.dumps(value, allow_nan=False))


# --- plan_retry ---------------------------------------------------------------


@st.composite
def stored_retry_tasks(draw: st.DrawFn) -> Task:
    """A task as the brain stores it: each event redacted by the agent and the brain, or not at all.

    Not at all stands for rows written before redaction flags existed, or an
    agent that does not redact: their arguments may hold markers with no flag.
    """
    events = []
    for event in draw(retry_events()):
        path = draw(st.sampled_from(["agent and brain", "brain", "none"]))
        if path == "agent and brain":
            event = redact_event(
                event, draw(redaction_policies), fully_redacted=draw(st.booleans())
            )
        if path != "none":
            event = redact_event(event, DEFAULT_POLICY)
        events.append(event)
    task = fold(events)
    assert task is not None
    return task


@given(
    task=stored_retry_tasks(),
    queue=retry_queue_overrides,
    countdown=retry_countdowns,
    eta=retry_etas,
)
def test_no_retry_ever_carries_a_marker(
    task: Task, queue: str | None, countdown: float | None, eta: datetime | None
) -> None:
    """A planned retry has no marker anywhere; arguments that may hold one are left to recover.

    plan_retry refuses exactly the tasks and overrides it must refuse; every
    other retry sends the stored arguments when nothing touched them, and asks
    the agent to recover them when redaction, a limit or a stored marker did.
    """
    target_queue = queue if queue is not None else task.queue
    routing_key = None if queue is not None else task.routing_key
    refused = (
        not task.name
        or (countdown is not None and eta is not None)
        or (countdown is not None and not 0 <= countdown <= A_YEAR_AND_A_DAY)
        or (queue is not None and not queue.strip())
        or marked([task.id, task.name, target_queue, routing_key])
    )
    if refused:
        with pytest.raises(InvalidInput):
            plan_retry(task, queue=queue, countdown=countdown, eta=eta)
        return
    plan = plan_retry(task, queue=queue, countdown=countdown, eta=eta)
    params = plan.item(NEW_ID).to_dict()
    assert contains_marker(params) is False
    assert not marked(params)
    assert REDACTED not in canonical_json(params).decode()
    assert TRUNCATED not in canonical_json(params).decode()
    assert strictly_json(params) == params
    assert (params["task_id"], params["name"]) == (task.id, task.name)
    assert (params["queue"], params["routing_key"]) == (target_queue, routing_key)
    assert params.get("countdown") == countdown
    if eta is None:
        assert "eta" not in params
    else:
        assert datetime.fromisoformat(params["eta"]) == eta
    if task.arguments_redacted or task.arguments_truncated or marked([task.args, task.kwargs]):
        assert plan.recover_arguments is True
        assert (plan.args, plan.kwargs) == (None, None)
        assert "args" not in params
        assert "kwargs" not in params
    else:
        assert plan.recover_arguments is False
        assert params["args"] == (task.args or [])
        assert params["kwargs"] == (task.kwargs or {})


@given(
    secret=texts_with_credential(),
    key=credential_keys(),
    key_secret=st.text(alphabet="QWXZ0123456789", min_size=12, max_size=20),
    data=st.data(),
    fully_redacted=st.booleans(),
)
def test_a_redacted_secret_never_reaches_the_retry(
    secret: tuple[str, str],
    key: str,
    key_secret: str,
    data: st.DataObject,
    fully_redacted: bool,
) -> None:
    """Secrets in arguments (in text, under a credential key, nested) are nowhere in the retry."""
    text, text_secret = secret
    event = TaskEvent(
        id="e1",
        task_id="task-1",
        kind=EventKind.RECEIVED,
        timestamp=BASE_TIME,
        name="app.send_email",
        queue="celery",
        args=[data.draw(nest_in_json(text)), data.draw(harmless_json)],
        kwargs={"options": data.draw(nest_in_json(key_secret, key=key))},
    )
    # The agent's pass (a task marked fully redacted in code, or not), then the brain's.
    stored = redact_event(
        redact_event(event, DEFAULT_POLICY, fully_redacted=fully_redacted), DEFAULT_POLICY
    )
    task = fold([stored])
    assert task is not None
    assert task.arguments_redacted
    params = plan_retry(task).item(NEW_ID).to_dict()
    assert params["recover_arguments"] is True
    assert text_secret not in canonical_json(params).decode()
    assert key_secret not in canonical_json(params).decode()


@given(args=retry_args, kwargs=retry_kwargs(), marker=json_with_marker(), in_kwargs=st.booleans())
def test_markers_in_unflagged_arguments_are_never_sent(
    args: list[Any], kwargs: dict[str, Any], marker: Any, in_kwargs: bool
) -> None:
    """A marker stored in the arguments without any flag (a key, nested, mid-string) is caught."""
    if in_kwargs:
        kwargs = {**kwargs, "extra": marker}
    else:
        args = [*args, marker]
    task = task_of(name="app.add", args=args, kwargs=kwargs)
    assert not task.arguments_redacted
    assert not task.arguments_truncated
    plan = plan_retry(task)
    assert plan.recover_arguments is True
    assert not marked(plan.item(NEW_ID).to_dict())


@given(
    args=st.lists(harmless_json, max_size=3),
    kwargs=st.dictionaries(st.sampled_from(["a", "to", "amount"]), harmless_json, max_size=3),
    queue=st.sampled_from([None, "priority"]),
)
def test_untouched_arguments_are_sent_as_stored(
    args: list[Any], kwargs: dict[str, Any], queue: str | None
) -> None:
    """When redaction changed nothing, the retry carries exactly the stored arguments."""
    event = TaskEvent(
        id="e1",
        task_id="task-1",
        kind=EventKind.FAILED,
        timestamp=BASE_TIME,
        name="app.add",
        queue="celery",
        routing_key="celery",
        args=args,
        kwargs=kwargs,
    )
    assert redact_event(event, DEFAULT_POLICY) is event
    task = fold([event])
    assert task is not None
    plan = plan_retry(task, queue=queue)
    assert plan.recover_arguments is False
    assert plan.item(NEW_ID).to_dict()["args"] == task.args == storable_json(args)
    assert plan.item(NEW_ID).to_dict()["kwargs"] == task.kwargs == storable_json(kwargs)
    assert plan.queue == (queue or "celery")
    assert plan.routing_key == (None if queue else "celery")


@given(marker=texts_with_marker(), where=st.sampled_from(["name", "queue", "routing_key"]))
def test_a_marker_in_name_queue_or_routing_key_is_refused(marker: str, where: str) -> None:
    """A retry cannot recover a name, queue or routing key, so a marked one refuses the retry."""
    fields = {"name": "app.add", "queue": "celery", "routing_key": "celery", where: marker}
    with pytest.raises(InvalidInput):
        plan_retry(task_of(**fields))


@given(marker=texts_with_marker())
def test_a_marker_in_a_queue_override_is_refused(marker: str) -> None:
    """An operator's queue override is checked like the stored queue."""
    with pytest.raises(InvalidInput):
        plan_retry(task_of(name="app.add"), queue=marker)


def test_a_task_whose_id_holds_a_marker_is_refused() -> None:
    """The task id goes into the command too, so it must be marker-free."""
    task = fold(
        [TaskEvent(id="e1", task_id=f"x{REDACTED}", kind="sent", timestamp=BASE_TIME, name="a")]
    )
    assert task is not None
    with pytest.raises(InvalidInput):
        plan_retry(task)


def test_a_task_without_a_name_is_refused() -> None:
    """No event carried the name: there is nothing to publish."""
    with pytest.raises(InvalidInput, match="name is unknown"):
        plan_retry(task_of(queue="celery", args=[1]))


@pytest.mark.parametrize(
    "overrides",
    [
        {"countdown": 5, "eta": BASE_TIME},
        {"countdown": -1},
        {"countdown": -0.001},
        {"countdown": A_YEAR_AND_A_DAY + 0.5},
        {"countdown": math.nan},
        {"countdown": math.inf},
        {"countdown": "5"},
        {"countdown": True},
        {"queue": ""},
        {"queue": "  \t"},
        {"queue": 3},
        {"eta": datetime(2026, 3, 1, 12, 0)},  # naive on purpose
        {"eta": "2026-03-01T12:00:00+00:00"},
    ],
)
def test_invalid_overrides_are_refused(overrides: dict[str, Any]) -> None:
    """Countdown with eta, a countdown outside 0 s .. a year, a blank queue, a naive eta."""
    with pytest.raises(InvalidInput):
        plan_retry(task_of(name="app.add"), **overrides)


@given(countdown=st.one_of(st.just(0), st.just(A_YEAR_AND_A_DAY), st.floats(0, A_YEAR_AND_A_DAY)))
def test_countdowns_from_zero_to_a_year_are_accepted(countdown: float) -> None:
    """Both bounds included."""
    assert (
        plan_retry(task_of(name="app.add"), countdown=countdown).item(NEW_ID).to_dict()["countdown"]
        == countdown
    )


@given(eta=aware_datetimes)
def test_an_eta_is_sent_in_utc(eta: datetime) -> None:
    """Whatever zone the operator gave, the command carries the same instant in UTC."""
    sent = plan_retry(task_of(name="app.add"), eta=eta).item(NEW_ID).to_dict()["eta"]
    assert datetime.fromisoformat(sent) == eta
    assert sent.endswith("+00:00")


# --- contains_marker ----------------------------------------------------------


@given(value=json_with_marker(), wrap=st.sampled_from(["none", "tuple", "key", "list", "set"]))
def test_contains_marker_finds_a_marker_anywhere(value: Any, wrap: str) -> None:
    """Keys, values, nested lists, dicts and tuples, inside longer strings: all found."""
    if wrap == "tuple":
        value = (1, (value,))
    elif wrap == "list":
        value = [[None, [value]]]
    elif wrap == "key":
        value = {"outer": {MARKER_FORMS[0] + "x": 1, "other": value}}
    elif wrap == "set":
        value = [frozenset({"a", canonical_json(value).decode()})]
    assert contains_marker(value) is True


@pytest.mark.parametrize("form", MARKER_FORMS)
def test_every_marker_form_is_recognised(form: str) -> None:
    """The domain's markers and every cut marker the Celery agent writes, old agents included."""
    assert contains_marker(form)
    assert contains_marker({form: 3})
    assert contains_marker(["a", ("b", f"before {form} after")])


@given(value=marker_free_json)
def test_contains_marker_finds_nothing_in_marker_free_json(value: Any) -> None:
    """No marker, no finding: near misses ("[z4j]", "[Z4J REDACTED]", "redacted") included."""
    assert contains_marker(value) is False


@pytest.mark.parametrize("text", MARKER_NEAR_MISSES)
def test_near_misses_are_no_markers(text: str) -> None:
    """Text that resembles a marker is an ordinary argument."""
    assert not contains_marker({text: [text]})


# --- Command lifecycle --------------------------------------------------------

PENDING, DELIVERED, ACKED = CommandStatus.PENDING, CommandStatus.DELIVERED, CommandStatus.ACKED
FINISHED = {CommandStatus.SUCCEEDED, CommandStatus.FAILED, CommandStatus.TIMED_OUT}
#: Every move a transition may make (staying put aside).
MOVES = {
    (PENDING, DELIVERED),
    (DELIVERED, ACKED),
    (DELIVERED, PENDING),
    # An outcome may arrive before its acknowledgement, or after a redelivery.
    *((before, after) for before in (PENDING, DELIVERED, ACKED) for after in FINISHED),
}


def check_fields(command: Command) -> None:
    """What a command's fields say agrees with its status."""
    finished = command.status.is_finished
    assert finished is (command.status in FINISHED)
    assert (command.finished_at is not None) is finished
    if not finished:
        assert (command.result, command.error) == (None, None)
    if command.status is PENDING:
        assert (command.agent, command.delivered_at, command.acked_at) == (None, None, None)
    if command.status in (DELIVERED, ACKED):
        assert command.agent is not None
        assert command.delivered_at is not None
    if not finished:
        assert (command.acked_at is not None) is (command.status is ACKED)
    if command.status is CommandStatus.TIMED_OUT:
        assert command.finished_at is not None
        assert command.finished_at >= command.deadline
    if command.status is CommandStatus.FAILED:
        assert command.error is not None
    if command.status is CommandStatus.SUCCEEDED:
        assert command.error is None
    if command.result is not None:
        assert strictly_json(command.result) == command.result
    for when in (command.delivered_at, command.acked_at, command.finished_at):
        assert when is None or when.utcoffset() == timedelta(0)


def transition(command: Command, call: tuple[str, tuple[Any, ...], dict[str, Any]]) -> Command:
    name, args, kwargs = call
    result: Command = getattr(command, name)(*args, **kwargs)
    return result


@given(calls=st.lists(command_transitions, max_size=12))
def test_the_lifecycle_only_moves_forward_and_an_outcome_is_final(
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]],
) -> None:
    """Any sequence of calls moves a command along the lifecycle only, and never off an outcome.

    pending -> delivered -> acked -> an outcome, back from delivered to pending
    by redeliverable, timed_out only by expire at or after the deadline; each
    call repeated at once changes nothing more.
    """
    command = new_command()
    check_fields(command)
    for call in calls:
        after = transition(command, call)
        check_fields(after)
        if command.status.is_finished:
            assert after == command
        elif after.status is not command.status:
            assert (command.status, after.status) in MOVES
        if after.status is CommandStatus.TIMED_OUT and command.status is not after.status:
            assert call[0] == "expire"
            assert call[1][0] >= command.deadline
        if call[0] == "expire" and not command.status.is_finished:
            assert after.status.is_finished is (call[1][0] >= command.deadline)
        assert transition(after, call) == after
        # Everything but the lifecycle fields is the command's own for good.
        assert (after.id, after.params, after.deadline) == (
            command.id,
            command.params,
            command.deadline,
        )
        command = after


@given(at=command_times, result=command_results, error=st.one_of(st.none(), st.text(max_size=5)))
def test_finish_records_the_outcome_storably(
    at: datetime, result: dict[str, Any] | None, error: str | None
) -> None:
    """An error makes it failed, no error succeeded; the result is kept as storable JSON."""
    done = new_command().deliver("a1", at).acknowledge(at).finish(at, result=result, error=error)
    assert done.status is (CommandStatus.SUCCEEDED if error is None else CommandStatus.FAILED)
    assert done.finished_at == at
    assert done.error == (None if error is None else error.replace("\x00", "\ufffd"))
    assert done.result == (storable_json(result) if result is not None else None)
    if result is not None:
        assert strictly_json(done.result) == done.result


def test_expire_says_where_the_command_stood() -> None:
    """A timed-out command's error names the status it had when the deadline passed."""
    deadline = BASE_TIME + DEFAULT_COMMAND_TIMEOUT
    delivered = new_command().deliver("a1", BASE_TIME)
    assert delivered.expire(deadline - timedelta(microseconds=1)) is delivered
    expired = delivered.expire(deadline)
    assert expired.status is CommandStatus.TIMED_OUT
    assert expired.finished_at == deadline
    assert expired.error is not None
    assert "delivered" in expired.error


# --- Command validation -------------------------------------------------------

_KEY_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))
valid_keys = st.text(alphabet=_KEY_CHARS, min_size=1, max_size=200)


@st.composite
def invalid_keys(draw: st.DrawFn) -> str:
    """Idempotency keys to refuse: empty, too long, with whitespace, control or non-ASCII."""
    kind = draw(st.sampled_from(["empty", "long", "spoiled"]))
    if kind == "empty":
        return ""
    if kind == "long":
        return draw(st.text(alphabet=_KEY_CHARS, min_size=201, max_size=260))
    key = draw(st.text(alphabet=_KEY_CHARS, max_size=20))
    bad = draw(st.sampled_from([" ", "\t", "\n", "\r", "\x00", "\x7f", "é", "键", "\u200b", "🙂"]))
    at = draw(st.integers(min_value=0, max_value=len(key)))
    return key[:at] + bad + key[at:]


@given(key=valid_keys)
def test_printable_ascii_idempotency_keys_are_accepted(key: str) -> None:
    """1 to 200 printable ASCII characters without spaces make a key."""
    assert new_command(idempotency_key=key).idempotency_key == key


@given(key=invalid_keys())
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    """Empty, over 200 characters, spaces, line breaks (trailing ones too), non-ASCII: refused."""
    with pytest.raises(InvalidInput):
        new_command(idempotency_key=key)


def test_the_idempotency_key_must_be_a_string() -> None:
    """A number is no key."""
    with pytest.raises(InvalidInput):
        new_command(idempotency_key=12345)


@pytest.mark.parametrize("filler", ["x", "é"])
def test_params_are_limited_to_256_kib_of_json(filler: str) -> None:
    """The limit counts bytes of canonical JSON, so multi-byte characters count double."""
    limit = 256 * 1024
    overhead = len(canonical_json({"blob": ""}))
    fits = filler * ((limit - overhead) // len(filler.encode()))
    assert len(canonical_json({"blob": fits})) <= limit
    new_command(params={"blob": fits})
    with pytest.raises(InvalidInput, match="limited"):
        new_command(params={"blob": fits + filler})


@pytest.mark.parametrize("params", [None, [], "task-1", [("task_id", "x")]])
def test_params_must_be_a_mapping(params: Any) -> None:
    """Parameters are a JSON object."""
    with pytest.raises(InvalidInput):
        new_command(params=params)


odd_params = st.dictionaries(
    st.one_of(st.text(max_size=6), st.integers()),
    st.one_of(
        harmless_json,
        st.floats(),
        st.tuples(st.floats(), st.text(max_size=3)),
        st.text(alphabet="a\x00", max_size=4),
    ),
    max_size=4,
)


@given(params=odd_params, result=odd_params)
def test_params_and_result_are_stored_as_storable_json(
    params: dict[Any, Any], result: dict[Any, Any]
) -> None:
    """NaN, infinities, tuples, non-string keys and NUL become what every store holds."""
    command = new_command(params=params)
    assert command.params is not params
    assert command.params == storable_json(params)
    assert strictly_json(command.params) == command.params
    assert "\x00" not in canonical_json(command.params).decode()
    for done in (
        command.finish(BASE_TIME, result=result),
        new_command(result=result, status="succeeded", finished_at=BASE_TIME),
    ):
        assert done.result is not result
        assert done.result == storable_json(result)
        assert strictly_json(done.result) == done.result


@given(error=st.text(alphabet="ab\x00", max_size=6))
def test_an_error_is_stored_without_nul(error: str) -> None:
    """No SQL text type holds NUL, so an agent's error has its NULs replaced."""
    done = new_command().finish(BASE_TIME, error=error)
    assert done.status is CommandStatus.FAILED
    assert done.error == error.replace("\x00", "\ufffd")


NAIVE = datetime(2026, 3, 1, 12, 0)  # naive on purpose


@pytest.mark.parametrize(
    "field", ["created_at", "deadline", "delivered_at", "acked_at", "finished_at"]
)
def test_naive_datetimes_are_refused_in_a_command(field: str) -> None:
    """A naive time has no meaning on the wire or in the store."""
    with pytest.raises(ValueError, match="naive"):
        new_command(**{field: NAIVE})


@pytest.mark.parametrize(
    ("status", "call"),
    [
        (PENDING, lambda c: c.deliver("a1", NAIVE)),
        (DELIVERED, lambda c: c.acknowledge(NAIVE)),
        (ACKED, lambda c: c.finish(NAIVE)),
        (PENDING, lambda c: c.expire(NAIVE)),
        (ACKED, lambda c: c.expire(NAIVE)),
        (CommandStatus.SUCCEEDED, lambda c: c.expire(NAIVE)),
        (CommandStatus.SUCCEEDED, lambda c: c.finish(NAIVE)),
    ],
)
def test_naive_datetimes_are_refused_by_every_transition(status: CommandStatus, call: Any) -> None:
    """Whatever the command's status, a transition given a naive time refuses it."""
    command = new_command()
    if status is not PENDING:
        command = command.deliver("a1", BASE_TIME)
    if status in (ACKED, CommandStatus.SUCCEEDED):
        command = command.acknowledge(BASE_TIME)
    if status is CommandStatus.SUCCEEDED:
        command = command.finish(BASE_TIME)
    assert command.status is status
    with pytest.raises(ValueError, match="naive"):
        call(command)


def test_a_command_is_immutable() -> None:
    """Transitions return new commands; the original stays as it was."""
    command = new_command()
    delivered = command.deliver("a1", BASE_TIME)
    assert command.status is PENDING
    assert delivered.status is DELIVERED
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        command.status = DELIVERED  # type: ignore[misc]


def test_arguments_cut_for_nesting_too_deep_are_recovered_not_sent() -> None:
    """Arguments stored cut off for nesting too deep (no flag set) are never sent as they are."""
    deep: Any = "leaf"
    for _ in range(100):
        deep = [deep]
    event = TaskEvent(
        id="e1",
        task_id="t1",
        kind=EventKind.SENT,
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        name="app.deep",
        args=[deep],
    )
    task = fold([event])
    assert not task.arguments_truncated
    assert contains_marker(task.args)
    plan = plan_retry(task)
    assert plan.recover_arguments
    assert "args" not in plan.item(NEW_ID).to_dict()


# --- the wire -----------------------------------------------------------------


@given(
    task=stored_retry_tasks(),
    queue=retry_queue_overrides,
    countdown=retry_countdowns,
    eta=retry_etas,
)
def test_a_retry_part_as_sent_and_as_the_agent_reads_it_never_holds_a_marker(
    task: Task, queue: str | None, countdown: float | None, eta: datetime | None
) -> None:
    """The frame body the brain sends has no marker, and the agent reads back the same item."""
    try:
        plan = plan_retry(task, queue=queue, countdown=countdown, eta=eta)
    except InvalidInput:
        return
    item = plan.item(retry_task_id("command-1", task.id))
    part = CommandPart(command_id="command-1", action=Action.RETRY, part=0, items=[item.to_dict()])
    body = strictly_json(part.body())
    assert not marked(body)
    assert not contains_marker(body)
    read = CommandPart.from_body(body)
    assert read == part
    assert RetryItem.from_dict(read.items[0]) == item


@given(args=retry_args, kwargs=retry_kwargs(), marker=json_with_marker())
def test_the_agent_refuses_an_item_whose_arguments_hold_a_marker(
    args: list[Any], kwargs: dict[str, Any], marker: Any
) -> None:
    """Whoever built it, an item with a marker in its arguments is refused before publishing."""
    item = {
        "task_id": "t-1",
        "new_task_id": "t-2",
        "name": "app.add",
        "recover_arguments": False,
        "args": [*args, marker],
        "kwargs": kwargs,
    }
    with pytest.raises(InvalidInput, match="marker"):
        RetryItem.from_dict(item)


def test_an_item_to_recover_carries_no_arguments_even_if_sent_some() -> None:
    """recover_arguments wins: arguments sent along anyway are dropped, never published."""
    item = RetryItem.from_dict(
        {
            "task_id": "t-1",
            "new_task_id": "t-2",
            "name": "app.add",
            "recover_arguments": True,
            "args": [REDACTED],
            "kwargs": {"password": REDACTED},
        }
    )
    assert (item.args, item.kwargs, item.recover_arguments) == (None, None, True)
    assert "args" not in item.to_dict()


@given(
    body=st.dictionaries(
        st.sampled_from(["id", "command", "part", "items", "options", "x"]), harmless_json
    )
)
def test_any_command_body_is_a_part_or_invalid_input(body: dict[str, Any]) -> None:
    """Whatever a frame carries, reading it gives a part or InvalidInput, never another error."""
    with contextlib.suppress(InvalidInput):
        part = CommandPart.from_body(body)
        assert CommandPart.from_body(part.body()) == part


@given(
    body=st.dictionaries(
        st.sampled_from(["id", "command", "part", "status", "outcomes", "result", "error"]),
        harmless_json,
    )
)
def test_any_report_body_is_a_report_or_invalid_input(body: dict[str, Any]) -> None:
    """A report from an agent is validated the same way: a report or InvalidInput."""
    with contextlib.suppress(InvalidInput):
        report = PartReport.from_body(body)
        assert PartReport.from_body(report.body()) == report


@given(
    outcomes=st.lists(
        st.tuples(st.sampled_from(list(ItemOutcome)), st.text(max_size=10)), max_size=300
    )
)
def test_progress_counts_every_outcome_and_names_the_first_problems(
    outcomes: list[tuple[ItemOutcome, str]],
) -> None:
    """Counts add up to what was done; problems are the first refused or failed, at most 50."""
    reports = [
        ItemReport(task_id=f"t-{n}", outcome=outcome, reason=reason or None)
        for n, (outcome, reason) in enumerate(outcomes)
    ]
    progress = Progress(total=len(reports))
    for start in range(0, len(reports), 7):
        progress = progress.add(reports[start : start + 7])
    result = progress.to_dict()
    assert result["done"] == len(reports) == sum(result["outcomes"].values())
    bad = [r.to_dict() for r in reports if not r.outcome.is_success]
    assert result["problems"] == bad[:MAX_PROBLEMS]
    assert strictly_json(result) == result


def test_retried_tasks_get_a_new_id_derived_from_the_command_and_the_task() -> None:
    """The same command and task give the same id; another command or task, another one."""
    first = retry_task_id("c-1", "t-1")
    assert first == retry_task_id("c-1", "t-1")
    assert len({first, retry_task_id("c-2", "t-1"), retry_task_id("c-1", "t-2")}) == 3
    assert str(uuid.UUID(first)) == first
