"""Hypothesis strategies for domain values, shared by every test module.

Pools of values are deliberately small (a few timestamps, names, workers) so that
generated events collide: equal timestamps, the same field carried with
different values at the same attempt, duplicate kinds. That is where an
order-dependent fold would show itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from ipaddress import IPv4Address
from typing import Any, Final

import attrs
from hypothesis import strategies as st

from z4j_domain.audit import (
    AuditEntry,
    AuditRecord,
    ChainHead,
    audit_key,
    chain_entry,
    genesis_head,
)
from z4j_domain.tasks import EventKind, Task, TaskEvent

BASE_TIME = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

timestamps = st.integers(min_value=0, max_value=6).map(lambda s: BASE_TIME + timedelta(seconds=s))

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


ANY_KIND = st.sampled_from(EventKind)
SMALL_ATTEMPTS = st.integers(min_value=0, max_value=2)


@st.composite
def _payload_flags(draw: st.DrawFn) -> dict[str, bool]:
    """Redaction flags as a real pass sets them: an argument flag implies the whole one."""
    arguments_redacted, arguments_truncated = draw(st.booleans()), draw(st.booleans())
    return {
        "arguments_redacted": arguments_redacted,
        "arguments_truncated": arguments_truncated,
        "redacted": arguments_redacted or draw(st.booleans()),
        "truncated": arguments_truncated or draw(st.booleans()),
    }


#: Mostly unflagged events, as in practice.
payload_flags: Final = st.one_of(st.just({}), _payload_flags())


# The optional fields of an event, built once: building strategies per draw costs
# more than drawing from them (hypothesis validates and inspects every new one).
_EVENT_IDS = st.uuids().map(lambda u: u.hex)
_CLOCKS = st.integers(min_value=0, max_value=3)
_NAMES = _maybe(st.sampled_from(["app.add", "app.mul"]))
_QUEUES = _maybe(st.sampled_from(["celery", "priority"]))
_WORKERS = _maybe(st.sampled_from(["w1@host", "w2@host"]))
_ARGS = _maybe(st.lists(json_scalars, max_size=3))
_KWARGS = _maybe(st.dictionaries(st.sampled_from(["a", "b"]), json_scalars, max_size=2))
_EXCEPTIONS = _maybe(st.sampled_from(["ValueError('x')", "KeyError('y')"]))
_TRACEBACKS = _maybe(st.sampled_from(["Traceback (most recent call last): ..."]))
_RUNTIMES = _maybe(st.floats(min_value=0, max_value=100, allow_nan=False))
_RETRIES = _maybe(st.integers(min_value=0, max_value=3))
_TIMES = _maybe(timestamps)
_ROOTS = _maybe(st.sampled_from(["root-1", "root-2"]))
_PARENTS = _maybe(st.sampled_from(["parent-1"]))
_GROUPS = _maybe(st.sampled_from(["group-1", "group-2"]))
_CHORDS = _maybe(st.sampled_from(["chord-1"]))
_RETRY_OFS = _maybe(st.sampled_from(["original-1", "original-2"]))


@st.composite
def task_events(
    draw: st.DrawFn,
    *,
    task_id: str = "task-1",
    event_id: str | None = None,
    kinds: st.SearchStrategy[EventKind] = ANY_KIND,
    attempts: st.SearchStrategy[int] = SMALL_ATTEMPTS,
) -> TaskEvent:
    """One event of ``task_id`` with a random selection of optional fields."""
    return TaskEvent(
        id=event_id or draw(_EVENT_IDS),
        task_id=task_id,
        kind=draw(kinds),
        timestamp=draw(timestamps),
        attempt=draw(attempts),
        clock=draw(_CLOCKS),
        name=draw(_NAMES),
        queue=draw(_QUEUES),
        routing_key=draw(_QUEUES),
        worker=draw(_WORKERS),
        args=draw(_ARGS),
        kwargs=draw(_KWARGS),
        result=draw(json_values),
        exception=draw(_EXCEPTIONS),
        traceback=draw(_TRACEBACKS),
        runtime=draw(_RUNTIMES),
        retries=draw(_RETRIES),
        eta=draw(_TIMES),
        expires=draw(_TIMES),
        root_id=draw(_ROOTS),
        parent_id=draw(_PARENTS),
        group_id=draw(_GROUPS),
        chord_id=draw(_CHORDS),
        retry_of=draw(_RETRY_OFS),
        **draw(payload_flags),
    )


@st.composite
def state_events(
    draw: st.DrawFn,
    *,
    task_id: str = "task-1",
    event_id: str | None = None,
    kinds: st.SearchStrategy[EventKind] = ANY_KIND,
    attempts: st.SearchStrategy[int] = SMALL_ATTEMPTS,
) -> TaskEvent:
    """One event of ``task_id`` carrying only what decides the task's state and finish time
    (kind, attempt, clock, timestamp, id): all that the statistics read, none of the payload."""
    return TaskEvent(
        id=event_id or draw(_EVENT_IDS),
        task_id=task_id,
        kind=draw(kinds),
        timestamp=draw(timestamps),
        attempt=draw(attempts),
        clock=draw(_CLOCKS),
    )


@st.composite
def event_sets(
    draw: st.DrawFn,
    *,
    task_id: str = "task-1",
    min_size: int = 1,
    max_size: int = 8,
    events: Callable[..., st.SearchStrategy[TaskEvent]] = task_events,
    **kwargs: Any,
) -> list[TaskEvent]:
    """A set of distinct events (unique ids) of one task, each drawn from ``events``."""
    size = draw(st.integers(min_value=min_size, max_value=max_size))
    return [
        draw(events(task_id=task_id, event_id=f"{task_id}-e{i}", **kwargs)) for i in range(size)
    ]


@st.composite
def multi_task_events(
    draw: st.DrawFn,
    *,
    max_tasks: int = 5,
    max_events: int = 6,
    events: Callable[..., st.SearchStrategy[TaskEvent]] = task_events,
) -> list[TaskEvent]:
    """Events of several tasks, interleaved."""
    n_tasks = draw(st.integers(min_value=1, max_value=max_tasks))
    drawn: list[TaskEvent] = []
    for t in range(n_tasks):
        drawn.extend(draw(event_sets(task_id=f"task-{t}", max_size=max_events, events=events)))
    return draw(st.permutations(drawn))


# --- Redaction (z4j_domain.redaction) -----------------------------------------
#
# Secrets are drawn from alphabets that the filler text around them never uses
# (filler is lower-case letters and " .,;"), so "this secret does not survive"
# can be checked by plain substring search.

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

#: Text around secrets: lower-case words and light punctuation, never a credential shape.
redaction_filler = st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,;", max_size=20)

#: Credential key words, as word lists, each a default key pattern.
CREDENTIAL_KEY_WORDS: list[list[str]] = [
    ["password"],
    ["passwd"],
    ["pwd"],
    ["secret"],
    ["token"],
    ["api", "key"],
    ["access", "key"],
    ["authorization"],
    ["auth"],
    ["credentials"],
    ["cookie"],
    ["session"],
    ["session", "id"],
    ["private", "key"],
    ["card", "number"],
    ["cvv"],
    ["cvc"],
    ["ssn"],
    ["jwt"],
    ["passphrase"],
]

#: Keys that look close to credential words but must not be redacted.
HARMLESS_KEYS: list[str] = [
    "author",
    "authority",
    "authored_by",
    "co_author",
    "authenticate",
    "tokenizer",
    "max_tokens",
    "tokens",
    "sessions",
    "classname",
    "class_name",
    "keyword",
    "monkey",
    "passenger",
    "compass",
    "bypass",
    "cookbook",
    "oauth_provider",
    "name",
    "id",
    "user_id",
    "email",
    "amount",
    "count",
    "status",
    "message",
]


def _key_style(words: list[str], style: str) -> str:
    if style == "snake":
        return "_".join(words)
    if style == "kebab":
        return "-".join(w.capitalize() for w in words)
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "upper":
        return "_".join(w.upper() for w in words)
    if style == "dotted":
        return ".".join(words)
    return "".join(words)  # compact


@st.composite
def credential_keys(draw: st.DrawFn) -> str:
    """A key every default policy redacts: a credential word in some casing and separator style."""
    words = list(draw(st.sampled_from(CREDENTIAL_KEY_WORDS)))
    style = draw(
        st.sampled_from(["snake", "kebab", "camel", "pascal", "upper", "dotted", "compact"])
    )
    if draw(st.booleans()):
        words.insert(0, draw(st.sampled_from(["x", "db", "user", "client", "aws"])))
    # A word glued on after a short credential word ("tokenvalue") is no longer that word.
    if style != "compact" and draw(st.booleans()):
        words.append(draw(st.sampled_from(["value", "hash", "v2", "raw"])))
    return _key_style(words, style)


harmless_keys = st.sampled_from(HARMLESS_KEYS)


def _chars(alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=min_size, max_size=max_size)


@st.composite
def _jwt(draw: st.DrawFn) -> tuple[str, str]:
    token = (
        "eyJ"
        + draw(_chars(_B64URL, 4, 30))
        + "."
        + draw(_chars(_B64URL, 4, 40))
        + "."
        + draw(_chars(_B64URL, 0, 40))
    )
    return token, token


@st.composite
def _bearer(draw: st.DrawFn) -> tuple[str, str]:
    token = draw(_chars(_ALNUM + "-._~+/", 7, 40)) + draw(_chars("0123456789", 1, 2))
    return "Bearer " + token, token


@st.composite
def _basic(draw: st.DrawFn) -> tuple[str, str]:
    import base64

    user = draw(_chars(_ALNUM, 3, 10))
    password = draw(_chars(_ALNUM + "!#%", 6, 20))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return "Basic " + token, token


@st.composite
def _url(draw: st.DrawFn) -> tuple[str, str]:
    scheme = draw(st.sampled_from(["postgres", "postgresql+asyncpg", "redis", "amqp", "https"]))
    user = draw(_chars("abcdefghijklmnopqrstuvwxyz", 0, 8))
    password = draw(_chars(_UPPER_DIGITS + "!$%*", 6, 20))
    host = draw(st.sampled_from(["db", "10.0.0.5:5432", "cache.internal", "[::1]"]))
    path = draw(st.sampled_from(["", "/", "/db", "/0?ssl=true", "#frag"]))
    return f"{scheme}://{user}:{password}@{host}{path}", password


@st.composite
def _pem(draw: st.DrawFn) -> tuple[str, str]:
    kind = draw(st.sampled_from(["", "RSA ", "EC ", "OPENSSH ", "ENCRYPTED "]))
    body = "\n".join(draw(st.lists(_chars(_ALNUM + "+/", 16, 64), min_size=1, max_size=4)))
    block = f"-----BEGIN {kind}PRIVATE KEY-----\n{body}\n-----END {kind}PRIVATE KEY-----"
    return block, body


@st.composite
def _cloud_key(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(
        st.one_of(
            st.tuples(st.sampled_from(["AKIA", "ASIA"]), _chars(_UPPER_DIGITS, 16, 16)),
            st.tuples(st.sampled_from(["ghp_", "gho_", "ghs_"]), _chars(_ALNUM, 36, 40)),
            st.tuples(st.just("github_pat_"), _chars(_ALNUM + "_", 22, 82)),
            st.tuples(
                st.sampled_from(["xoxb-", "xoxp-", "xoxa-", "xoxr-"]), _chars(_ALNUM, 10, 40)
            ),
            st.tuples(
                st.sampled_from(["sk_live_", "rk_live_", "sk_test_"]), _chars(_ALNUM, 16, 40)
            ),
            st.tuples(st.just("AIza"), _chars(_B64URL, 35, 35)),
        ).map("".join)
    )
    return key, key


@st.composite
def _assignment(draw: st.DrawFn) -> tuple[str, str]:
    key = draw(credential_keys())
    value = draw(_chars(_UPPER_DIGITS, 6, 20))
    form = draw(
        st.sampled_from(["{k}={v}", "{k}: {v}", "'{k}': '{v}'", '"{k}": "{v}"', "?{k}={v}&a=b"])
    )
    return form.format(k=key, v=value), value


#: (text, secret): a credential in one of the shapes value patterns find; ``secret`` is the
#: part that must not survive redaction.
credential_texts: st.SearchStrategy[tuple[str, str]] = st.one_of(
    _jwt(), _bearer(), _basic(), _url(), _pem(), _cloud_key(), _assignment()
)


@st.composite
def texts_with_credential(draw: st.DrawFn) -> tuple[str, str]:
    """(text, secret): a credential text between filler, separated from it by whitespace."""
    text, secret = draw(credential_texts)
    before, after = draw(redaction_filler), draw(redaction_filler)
    return f"{before} {text}\n{after}", secret


#: Fragments that, glued together at random, probe how the value patterns interact.
tricky_texts = st.lists(
    st.sampled_from(
        [
            "password",
            "token",
            "auth",
            "author",
            "=",
            ":",
            "://",
            "@",
            "/",
            " ",
            "\n",
            "'",
            '"',
            "Bearer ",
            "Basic ",
            "Token ",
            "eyJ",
            "abc",
            "A1b2C3d4",
            ".",
            "-----BEGIN PRIVATE KEY-----",
            "-----END PRIVATE KEY-----",
            "AKIAABCDEFGHIJ012345",
            "[z4j redacted]",
            "[z4j truncated]",
            "&",
            "?",
        ]
    ),
    max_size=12,
).map("".join)

#: Harmless JSON-like values: no credential key, no credential shape, small enough for any limit.
harmless_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        # No "_", "-", ":", "=" or capitals: no credential shape can form; "bearer 1234abcd" could.
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 .,@/#", max_size=30).filter(
            lambda text: "bearer" not in text and "basic" not in text
        ),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(harmless_keys, st.text(alphabet="xyz", max_size=3)), children, max_size=4
        ),
    ),
    max_leaves=15,
)


@st.composite
def nest_in_json(draw: st.DrawFn, leaf: Any, *, key: str | None = None) -> Any:
    """``leaf`` (under ``key`` in a dict, if given) at a random depth among harmless values."""
    value: Any = {key: leaf} if key is not None else leaf
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        if draw(st.booleans()):
            siblings = draw(st.lists(harmless_json, max_size=2))
            siblings.insert(draw(st.integers(0, len(siblings))), value)
            value = siblings
        else:
            value = {
                **draw(st.dictionaries(harmless_keys, harmless_json, max_size=2)),
                "nested": value,
            }
    return value


class _RaisingRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    __str__ = __repr__


class _RaisingHashStr(str):
    """A str whose hash raises: usable as a value only (a dict or set cannot hold it)."""

    __slots__ = ()

    def __hash__(self) -> int:
        raise RuntimeError("hash refused")


class _ExplodingMapping(dict[Any, Any]):
    def items(self) -> Any:
        raise RuntimeError("items refused")


#: Leaves no JSON encoder accepts: bytes, sets, tuples, odd objects, long and weird strings.
odd_leaves: st.SearchStrategy[Any] = st.one_of(
    json_scalars,
    st.binary(max_size=40),
    st.builds(bytearray, st.binary(max_size=10)),
    st.frozensets(st.text(max_size=5), max_size=3),
    st.sets(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
    st.floats(),
    st.integers(),
    st.builds(_RaisingRepr),
    st.builds(_RaisingHashStr, st.text(max_size=5)),
    st.builds(_ExplodingMapping),
    st.just(object()),
    st.integers(min_value=1, max_value=50_000).map(lambda n: "a=" * n),
    st.integers(min_value=1, max_value=20_000).map(lambda n: "eyJ" * n + "." * n),
    st.text(),
    credential_texts.map(lambda pair: pair[0]),
)

#: Nested values of every odd kind, with non-string keys.
odd_values: st.SearchStrategy[Any] = st.recursive(
    odd_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(
            st.one_of(
                st.text(max_size=8),
                credential_keys(),
                st.integers(),
                st.none(),
                st.tuples(st.integers()),
            ),
            children,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


# --- Audit log (z4j_domain.audit) ---------------------------------------------
#
# Keys come from audit_key, as in production: always 32 bytes, so two keys that
# differ are different HMAC keys (raw short keys are zero-padded by HMAC, which
# would make b"k" and b"k\x00" the same key).

#: Audit chain keys, derived from instance secrets.
audit_keys = st.text(max_size=12).map(audit_key)

#: Two different audit chain keys.
two_audit_keys = st.lists(st.text(max_size=12), min_size=2, max_size=2, unique=True).map(
    lambda secrets: (audit_key(secrets[0]), audit_key(secrets[1]))
)

_WORD = st.builds(
    str.__add__,
    st.sampled_from("abcdefghijklmnopqrstuvwxyz"),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", max_size=5),
)

#: Valid audit actions: dotted lower-case words, some of them real ones.
audit_actions = st.one_of(
    st.sampled_from(
        ["auth.login", "auth.login_failed", "auth.logout", "tasks.retry", "members.role_changed"]
    ),
    st.lists(_WORD, min_size=2, max_size=4).map(".".join),
)

#: Text an audit record accepts in actor, target and source_ip: any unicode but NUL.
audit_texts = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=16
)

#: Aware datetimes at fixed offsets from UTC (whole and odd minutes), microseconds included.
aware_datetimes = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.integers(min_value=-14 * 60, max_value=14 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
)

_UNICODE = st.text(alphabet="azoë€日本語🙂\u200b\u202e", max_size=6)

#: Audit details: small JSON objects with unicode keys and values, a little nesting.
audit_details = st.dictionaries(
    st.one_of(st.sampled_from(["through_seq", "role", "reason"]), _UNICODE),
    st.one_of(
        json_scalars,
        _UNICODE,
        st.lists(json_scalars, max_size=2),
        st.dictionaries(_UNICODE, json_scalars, max_size=2),
    ),
    max_size=3,
)


#: Source IPs: a few of both families, and any IPv4 (st.ip_addresses is slow to draw).
audit_ips = st.one_of(
    st.sampled_from(["127.0.0.1", "::1", "2001:db8::7", "203.0.113.9"]),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(IPv4Address(n))),
)

#: Valid audit records with a random selection of optional fields (strategies built once:
#: building them per draw costs more than drawing).
audit_records: st.SearchStrategy[AuditRecord] = st.builds(
    AuditRecord,
    action=audit_actions,
    actor=st.one_of(st.sampled_from(["alice@example.com", "cli:bob", "system"]), audit_texts),
    at=aware_datetimes,
    actor_id=_maybe(st.integers(min_value=1, max_value=2**31)),
    target=_maybe(st.one_of(st.sampled_from(["task:abc", "agent:w1"]), audit_texts)),
    project_id=_maybe(st.integers(min_value=1, max_value=50)),
    source_ip=_maybe(audit_ips),
    details=audit_details,
)


def build_audit_chain(
    key: bytes, records: list[AuditRecord], head: ChainHead | None = None
) -> tuple[list[AuditEntry], ChainHead]:
    """The entries appending ``records`` after ``head`` (``None``: empty chain), and the head."""
    head = head or genesis_head()
    entries: list[AuditEntry] = []
    for record in records:
        entry, head = chain_entry(key, head, record)
        entries.append(entry)
    return entries, head


@st.composite
def audit_chains(
    draw: st.DrawFn, key: bytes, *, min_size: int = 0, max_size: int = 4
) -> tuple[list[AuditEntry], ChainHead]:
    """A valid chain of ``key`` (entries from sequence number 1) and its signed head."""
    return build_audit_chain(
        key, draw(st.lists(audit_records, min_size=min_size, max_size=max_size))
    )


# --- Commands and retries (z4j_domain.commands) ---------------------------------
#
# Retry arguments mix what redaction must catch (credential keys, credential
# shapes, nested), marker strings written straight into the arguments (as an
# older agent or brain left them, with no flag), and harmless values.

#: Every form a marker has taken: the domain's two, and the Celery agent's cuts
#: (which say what was cut, or mark a cut mapping with a key).
MARKER_FORMS: list[str] = [
    "[z4j redacted]",
    "[z4j truncated]",
    "[z4j truncated 5000 chars]",
    "[z4j truncated 3 more items]",
    "[z4j truncated nesting deeper than 16] [[...]]",
    "[z4j truncated 300000 bytes of JSON, limit 262144]",
    "[z4j truncated too large to forward]",
    "__z4j_truncated__",
]

#: Text that looks like a marker but is none: never to be mistaken for one.
MARKER_NEAR_MISSES: list[str] = [
    "[z4j]",
    "z4j redacted]",
    "z4j truncated",
    "[Z4J REDACTED]",
    "[z4j  redacted]",
    "[z4j-redacted]",
    "(z4j truncated)",
    "__z4j__",
    "redacted",
    "truncated",
]


@st.composite
def texts_with_marker(draw: st.DrawFn) -> str:
    """A string holding a marker form, alone or inside longer text."""
    marker = draw(st.sampled_from(MARKER_FORMS))
    if draw(st.booleans()):
        return marker
    return draw(redaction_filler) + marker + draw(redaction_filler)


#: Strings with no marker form in them, near misses included.
marker_free_texts = st.one_of(
    st.sampled_from(MARKER_NEAR_MISSES), redaction_filler, st.text(max_size=12)
)

#: JSON values (tuples too) whose strings and keys hold no marker form.
marker_free_json: st.SearchStrategy[Any] = st.recursive(
    st.one_of(json_scalars, marker_free_texts),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(marker_free_texts, children, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def json_with_marker(draw: st.DrawFn) -> Any:
    """A JSON value with a marker somewhere: a value, a key, or inside a longer string."""
    marker = draw(texts_with_marker())
    if draw(st.booleans()):
        return draw(nest_in_json({marker: draw(harmless_json)}))
    return draw(nest_in_json(marker))


@st.composite
def secret_json(draw: st.DrawFn) -> Any:
    """A JSON value that the default redaction changes: a credential under a key or in text."""
    if draw(st.booleans()):
        return draw(
            nest_in_json(
                draw(json_scalars.filter(lambda v: v is not None)), key=draw(credential_keys())
            )
        )
    return draw(nest_in_json(draw(texts_with_credential())[0]))


#: What one argument may be: harmless, a secret for redaction to catch, or a marker.
retry_argument_values = st.one_of(harmless_json, harmless_json, secret_json(), json_with_marker())

#: A task's positional arguments, as its events carry them.
retry_args = st.lists(retry_argument_values, max_size=3)


@st.composite
def retry_kwargs(draw: st.DrawFn) -> dict[str, Any]:
    """A task's keyword arguments: harmless names, credential names, marker names."""
    names = st.one_of(harmless_keys, credential_keys(), texts_with_marker())
    return draw(st.dictionaries(names, retry_argument_values, max_size=3))


def _mostly(usual: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` about eight times in ten, ``rare`` or ``None`` once each."""
    return st.integers(min_value=0, max_value=9).flatmap(
        lambda n: usual if n < 8 else (rare if n == 8 else st.none())
    )


#: A task's name, queue or routing key: mostly ordinary, sometimes a marker, sometimes unknown.
retry_names = _mostly(st.sampled_from(["app.add", "app.send_email"]), texts_with_marker())
retry_queues = _mostly(st.sampled_from(["celery", "priority"]), texts_with_marker())


@st.composite
def retry_events(draw: st.DrawFn, *, task_id: str = "task-1") -> list[TaskEvent]:
    """A task's events carrying arguments that may hold secrets or markers, not yet redacted.

    Some carry the flags an agent sets for its own cuts. The task has one name,
    queue and routing key, which each event carries or leaves out.
    """
    size = draw(st.integers(min_value=1, max_value=3))
    name, queue, routing_key = draw(retry_names), draw(retry_queues), draw(retry_queues)
    return [
        TaskEvent(
            id=f"{task_id}-e{i}",
            task_id=task_id,
            kind=draw(ANY_KIND),
            timestamp=draw(timestamps),
            attempt=draw(SMALL_ATTEMPTS),
            name=name if i == 0 or draw(st.booleans()) else None,
            queue=queue if draw(st.booleans()) else None,
            routing_key=routing_key if draw(st.booleans()) else None,
            args=draw(_maybe(retry_args)),
            kwargs=draw(_maybe(retry_kwargs())),
            **draw(payload_flags),
        )
        for i in range(size)
    ]


#: Retry overrides, mostly absent: valid and invalid queues, countdowns (negative, over a
#: year, NaN) and etas.
retry_queue_overrides = _mostly(
    st.none(),
    st.one_of(
        st.sampled_from(["celery", "priority", "", "   ", "\t"]),
        texts_with_marker(),
        st.text(max_size=8),
    ),
)
retry_countdowns = _mostly(
    st.none(),
    st.one_of(
        st.floats(min_value=0, max_value=366 * 86_400),
        st.integers(min_value=-10, max_value=10),
        st.sampled_from([-0.5, 366 * 86_400, 366 * 86_400 + 1, 10**9]),
        st.floats(),
    ),
)
retry_etas = _mostly(st.none(), aware_datetimes)


# --- Command lifecycle --------------------------------------------------------

#: Times of transitions on a command created at BASE_TIME with a ten-minute deadline: before,
#: at and after the deadline, in assorted zones.
command_times = st.tuples(
    st.one_of(st.integers(min_value=0, max_value=20 * 60), st.just(10 * 60)),
    st.sampled_from([timedelta(0), timedelta(hours=2), timedelta(hours=-5, minutes=-30)]),
).map(lambda t: (BASE_TIME + timedelta(seconds=t[0])).astimezone(timezone(t[1])))

#: Command results as agents report them, NaN and infinities included.
command_results = _maybe(
    st.dictionaries(st.text(max_size=6), st.one_of(json_values, st.floats()), max_size=3)
)

#: One transition call on a command: (method name, positional args, keyword args).
command_transitions: st.SearchStrategy[tuple[str, tuple[Any, ...], dict[str, Any]]] = st.one_of(
    st.tuples(
        st.just("deliver"), st.tuples(st.sampled_from(["a1", "a2"]), command_times), st.just({})
    ),
    st.tuples(st.just("acknowledge"), st.tuples(command_times), st.just({})),
    st.tuples(
        st.just("finish"),
        st.tuples(command_times),
        st.fixed_dictionaries(
            {"result": command_results}, optional={"error": st.sampled_from(["boom", ""])}
        ),
    ),
    st.tuples(st.just("expire"), st.tuples(command_times), st.just({})),
    st.tuples(st.just("redeliverable"), st.just(()), st.just({})),
)


# --- Canvases (z4j_domain.canvas) ---------------------------------------------
#
# A canvas is drawn as a nested spec (task, chain, group, chord) and "run" the
# way Celery links its tasks: a chain step names the step before as parent; a
# group's members share a group id (a group nested in a group is flattened into
# it); a chain in a group or chord header carries the group id and the chord's
# callback id on its last task; the callback (a chain's last task, when the
# callback is a chain) gets the header's group id, and the first task of the
# callback is published by the header task that finished last.

_TASK: Final = ("task",)

canvas_specs: st.SearchStrategy[Any] = st.recursive(
    st.just(_TASK),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=4).map(lambda steps: ("chain", steps)),
        st.lists(inner, min_size=1, max_size=4).map(lambda members: ("group", members)),
        st.tuples(
            st.lists(inner, min_size=1, max_size=4),
            # The callback: a task, or a chain that ends with one.
            st.one_of(
                st.just(_TASK),
                st.lists(inner, min_size=1, max_size=2).map(lambda s: ("chain", [*s, _TASK])),
            ),
        ).map(lambda hb: ("chord", hb[0], hb[1])),
    ),
    max_leaves=20,
)


@attrs.frozen(kw_only=True)
class CanvasCase:
    """Tasks of one canvas run the Celery way, and what the test needs to know about them."""

    tasks: list[Task] = attrs.field(repr=lambda tasks: repr([_links(t) for t in tasks]))
    #: Every chord's callback id and its header task ids (stored or not).
    chords: dict[str, list[str]]
    #: Ids that were part of the canvas but are not among ``tasks`` (not stored).
    missing: set[str]


def _links(task: Task) -> tuple[str, str | None, str | None, str | None, str]:
    return (task.id, task.parent_id, task.group_id, task.chord_id, task.first_seen_at.isoformat())


@attrs.define
class _CanvasRun:
    draw: st.DrawFn
    links: dict[str, dict[str, str | None]] = attrs.Factory(dict)
    chords: dict[str, list[str]] = attrs.Factory(dict)
    ids: int = 0

    def new_id(self, prefix: str) -> str:
        self.ids += 1
        # A random letter first, so the ids' order is not the order they were made in.
        return f"{self.draw(st.sampled_from('bdfhk'))}{prefix}{self.ids}"

    def run(
        self,
        spec: Any,
        parent: str | None,
        group: str | None = None,
        chord: str | None = None,
        last: str | None = None,
    ) -> list[str]:
        """Publish ``spec``; return the ids of the tasks that finish it (a chain's next parent).

        ``group``, ``chord`` and ``last`` (a task id fixed in advance) go to the
        tasks that finish the spec, as Celery freezes them.
        """
        if spec[0] == "task":
            task_id = last or self.new_id("t")
            self.links[task_id] = {"parent_id": parent, "group_id": group, "chord_id": chord}
            return [task_id]
        if spec[0] == "chain":
            *steps, final = spec[1]
            ends = [parent] if parent is not None else []
            for step in steps:
                ends = self.run(step, ends[-1] if ends else None)
            return self.run(final, ends[-1] if ends else None, group, chord, last)
        assert last is None
        if spec[0] == "group":
            group_id = group or self.new_id("g")
            return [end for member in spec[1] for end in self.run(member, parent, group_id, chord)]
        header_group = self.new_id("g")
        callback = self.new_id("cb")
        headers = [
            end for member in spec[1] for end in self.run(member, parent, header_group, callback)
        ]
        self.chords[callback] = headers
        # The header task that finished last publishes the callback.
        return self.run(
            spec[2], self.draw(st.sampled_from(headers)), group or header_group, chord, callback
        )


@st.composite
def celery_canvases(draw: st.DrawFn, *, specs: st.SearchStrategy[Any] = canvas_specs) -> CanvasCase:
    """A canvas as Celery links it, some of its tasks possibly not stored (yet)."""
    canvas = _CanvasRun(draw)
    canvas.run(draw(specs), None)
    order = list(canvas.links)
    root = order[0]
    missing = {task_id for task_id in order[1:] if draw(st.integers(0, 9)) == 5}
    tasks: list[Task] = []
    for i, task_id in enumerate(order):
        if task_id in missing:
            continue
        kind = draw(
            st.sampled_from(
                [EventKind.SENT, EventKind.STARTED, EventKind.SUCCEEDED, EventKind.FAILED]
            )
        )
        event = TaskEvent(
            id=f"{task_id}:e",
            task_id=task_id,
            kind=kind,
            # Roughly the order they were published in, with ties.
            timestamp=BASE_TIME + timedelta(seconds=i // 2),
            name=f"app.step{i % 3}",
            runtime=draw(_maybe(st.floats(min_value=0, max_value=100))),
            root_id=draw(st.sampled_from([None, root])) if task_id == root else root,
            **canvas.links[task_id],
        )
        tasks.append(Task.from_event(event))
    return CanvasCase(tasks=tasks, chords=canvas.chords, missing=missing)


#: Canvases of chains and groups only: trees, drawable without a crossing.
tree_canvas_specs: st.SearchStrategy[Any] = st.recursive(
    st.just(_TASK),
    lambda inner: st.one_of(
        st.lists(inner, min_size=2, max_size=4).map(lambda steps: ("chain", steps)),
        st.lists(inner, min_size=1, max_size=4).map(lambda members: ("group", members)),
    ),
    max_leaves=20,
)

_CANVAS_IDS: Final = ["a", "b", "c", "d", "e", "f", "g"]
_canvas_links = st.one_of(st.none(), st.sampled_from([*_CANVAS_IDS, "elsewhere"]))


@st.composite
def tangled_canvases(draw: st.DrawFn) -> list[Task]:
    """Tasks with arbitrary links: cycles, self-links, unknown ids, duplicates of one id."""
    tasks: list[Task] = []
    for i in range(draw(st.integers(min_value=0, max_value=12))):
        task_id = draw(st.sampled_from(_CANVAS_IDS))
        event = TaskEvent(
            id=f"e{i}",
            task_id=task_id,
            kind=draw(ANY_KIND),
            timestamp=draw(timestamps),
            name=draw(_maybe(st.sampled_from(["app.add", "app.mul"]))),
            runtime=draw(_maybe(st.floats(min_value=0, max_value=100))),
            root_id=draw(_canvas_links),
            parent_id=draw(_canvas_links),
            group_id=draw(_maybe(st.sampled_from(["g1", "g2"]))),
            chord_id=draw(_canvas_links),
        )
        tasks.append(Task.from_event(event))
    return tasks
