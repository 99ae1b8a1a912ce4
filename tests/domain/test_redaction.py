"""Redaction: no credential survives, harmless data is untouched, the walk never fails."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.strategies import (
    HARMLESS_KEYS,
    credential_keys,
    credential_texts,
    harmless_json,
    json_values,
    nest_in_json,
    odd_values,
    redaction_filler,
    texts_with_credential,
    tricky_texts,
)
from z4j_domain.encoding import canonical_json
from z4j_domain.errors import InvalidInput
from z4j_domain.redaction import (
    DEFAULT_POLICY,
    DEFAULT_VALUE_PATTERNS,
    REDACTED,
    TRUNCATED,
    Redacted,
    RedactionPolicy,
    redact,
    redact_task_payload,
)

small_policies = st.builds(
    RedactionPolicy,
    max_depth=st.integers(min_value=1, max_value=5),
    max_nodes=st.integers(min_value=1, max_value=25),
)
policies = st.one_of(st.just(DEFAULT_POLICY), small_policies)


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            yield from strings_in(item)


def values_under(value: Any, key: str) -> Iterator[Any]:
    """Every value found under ``key`` in any mapping inside ``value``."""
    if isinstance(value, dict):
        for k, item in value.items():
            if k == key:
                yield item
            yield from values_under(item, key)
    elif isinstance(value, list):
        for item in value:
            yield from values_under(item, key)


# --- properties ---------------------------------------------------------------


@given(key=credential_keys(), secret=json_values, data=st.data())
def test_no_value_under_a_credential_key_survives(
    key: str, secret: Any, data: st.DataObject
) -> None:
    """Whatever a credential key holds, at any depth, comes out as the marker (None stays None)."""
    value = data.draw(nest_in_json(secret, key=key))
    out = redact(value, DEFAULT_POLICY)
    found = list(values_under(out.value, key))
    assert found, "the key itself is kept"
    assert all(item == REDACTED or (item is None and secret is None) for item in found)
    assert out.redacted is (secret is not None)


@given(key=credential_keys(), marker=st.uuids(), data=st.data())
def test_a_credential_value_leaves_no_trace_in_the_output(
    key: str, marker: Any, data: st.DataObject
) -> None:
    """A distinctive secret under a credential key appears nowhere in the redacted value."""
    secret = f"S3CRET{marker.hex}"
    nested_secret = data.draw(st.sampled_from([secret, [secret], {"inner": {"x": secret}}]))
    value = data.draw(nest_in_json(nested_secret, key=key))
    out = redact(value, DEFAULT_POLICY)
    assert secret.encode() not in canonical_json(out.value)


@given(pair=texts_with_credential(), data=st.data())
def test_no_credential_text_survives_at_any_depth(
    pair: tuple[str, str], data: st.DataObject
) -> None:
    """A credential shape in any string, at any depth, is gone after redaction."""
    text, secret = pair
    value = data.draw(nest_in_json(text, key=data.draw(st.sampled_from(HARMLESS_KEYS))))
    out = redact(value, DEFAULT_POLICY)
    assert out.redacted
    assert all(secret not in string for string in strings_in(out.value))
    assert any(REDACTED in string for string in strings_in(out.value))


@given(
    text=st.one_of(
        tricky_texts,
        texts_with_credential().map(lambda pair: pair[0]),
        st.lists(st.sampled_from(["x", " ", "\n"]) | credential_texts.map(lambda p: p[0])).map(
            "".join
        ),
    )
)
def test_no_match_of_a_default_value_pattern_survives(text: str) -> None:
    """After redaction, every match of a default value pattern is (or keeps) only the marker."""
    out = redact(text, DEFAULT_POLICY).value
    for source in DEFAULT_VALUE_PATTERNS:
        for match in re.finditer(source, out):
            if "secret" in match.re.groupindex:
                assert match.group("secret") == REDACTED
            else:
                pytest.fail(f"{match.group(0)!r} survived in {out!r}")


@given(pair=texts_with_credential(), filler=redaction_filler)
def test_no_credential_survives_in_exceptions_and_tracebacks(
    pair: tuple[str, str], filler: str
) -> None:
    """Exception messages and traceback text get the same value patterns as arguments."""
    text, secret = pair
    assume(secret not in filler)
    payload = redact_task_payload(
        DEFAULT_POLICY,
        name="app.charge",
        exception=f"ValueError({text!r})",
        traceback=f"Traceback (most recent call last):\n  {filler}\n{text}\n",
    )
    assert payload.exception is not None
    assert payload.traceback is not None
    assert secret not in payload.exception
    assert secret not in payload.traceback
    assert payload.redacted
    assert not payload.arguments_redacted


@given(
    value=st.one_of(
        json_values,
        tricky_texts,
        st.lists(tricky_texts, max_size=3),
        st.dictionaries(st.one_of(credential_keys(), tricky_texts), json_values, max_size=3),
        texts_with_credential().flatmap(lambda pair: nest_in_json(pair[0])),
        st.tuples(credential_keys(), json_values).flatmap(
            lambda kv: nest_in_json(kv[1], key=kv[0])
        ),
    ),
    policy=policies,
)
def test_redaction_is_idempotent(value: Any, policy: RedactionPolicy) -> None:
    """Redacting redacted output changes nothing and reports nothing new."""
    once = redact(value, policy)
    twice = redact(once.value, policy)
    assert twice.value == once.value
    assert not twice.redacted
    assert not twice.truncated


@given(text=tricky_texts)
def test_redacting_text_is_idempotent(text: str) -> None:
    """Glued-together fragments of every pattern (and the markers) settle after one pass."""
    once = redact(text, DEFAULT_POLICY).value
    assert redact(once, DEFAULT_POLICY) == Redacted(value=once, redacted=False, truncated=False)


@given(value=harmless_json)
def test_harmless_data_is_returned_unchanged(value: Any) -> None:
    """Data without credentials comes back as the very same object, with no flag set."""
    out = redact(value, DEFAULT_POLICY)
    assert out.value is value
    assert not out.redacted
    assert not out.truncated


@given(key=st.sampled_from(HARMLESS_KEYS), value=st.text(alphabet="abcxyz 019.", max_size=10))
def test_keys_that_only_resemble_credential_words_are_kept(key: str, value: str) -> None:
    """author, authority, tokenizer, max_tokens and friends keep their values."""
    assert redact({key: value}, DEFAULT_POLICY).value == {key: value}


@given(value=odd_values, policy=policies)
def test_never_raises_on_odd_input(value: Any, policy: RedactionPolicy) -> None:
    """Bytes, sets, tuples, non-str keys, objects with raising methods, long strings: no error."""
    out = redact(value, policy)
    assert isinstance(out.redacted, bool)
    assert isinstance(out.truncated, bool)


@given(value=st.one_of(odd_values, json_values), name=st.sampled_from(["a.b", "secret.task"]))
def test_payload_redaction_never_raises(value: Any, name: str) -> None:
    """Every part of a task payload may be odd; the payload is still redacted without error."""
    policy = RedactionPolicy(fully_redacted_tasks={"secret.task"})
    payload = redact_task_payload(
        policy, name=name, args=[value], kwargs={"v": value}, result=value, exception="x"
    )
    assert isinstance(payload.redacted, bool)


@given(
    value=st.one_of(
        st.lists(json_values, max_size=3), st.dictionaries(st.text(max_size=3), json_values)
    ),
    data=st.data(),
    policy=policies,
)
def test_cycles_are_cut_not_followed(
    value: Any, data: st.DataObject, policy: RedactionPolicy
) -> None:
    """A container that contains itself (at any depth) comes out finite, cut by a marker."""
    holder: Any = value
    for _ in range(data.draw(st.integers(0, 3))):
        holder = [holder] if data.draw(st.booleans()) else {"k": holder}
    if isinstance(value, list):
        value.append(holder)
    else:
        value["self"] = holder
    out = redact(value, policy)
    assert out.truncated
    canonical_json(out.value)  # would raise "Circular reference detected"
    assert TRUNCATED in set(strings_in(out.value))


@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), json_values, max_size=4),
    result=json_values,
)
def test_fully_redacted_tasks_reveal_no_argument_or_result(
    args: list[Any], kwargs: dict[str, Any], result: Any
) -> None:
    """A fully-redacted task keeps its arity and keyword names, and nothing else."""
    policy = RedactionPolicy(fully_redacted_tasks={"billing.charge"})
    payload = redact_task_payload(
        policy,
        name="billing.charge",
        args=args,
        kwargs=kwargs,
        result=result,
        exception="CardDeclined('no')",
    )
    assert payload.args == [None if a is None else REDACTED for a in args]
    assert payload.kwargs is not None
    assert list(payload.kwargs) == list(redact(list(kwargs), policy).value)
    assert all(v == REDACTED or v is None for v in payload.kwargs.values())
    assert payload.result == (None if result is None else REDACTED)
    assert payload.exception == "CardDeclined('no')"
    real_arguments = any(a is not None for a in [*args, *kwargs.values()])
    assert payload.arguments_redacted is real_arguments
    assert payload.redacted is (real_arguments or result is not None)
    again = redact_task_payload(
        policy, name="billing.charge", args=payload.args, kwargs=payload.kwargs
    )
    assert not again.redacted


@given(
    args=st.lists(st.text(alphabet="abc", max_size=4), max_size=3),
    kwargs=st.dictionaries(st.sampled_from(["a", "b"]), st.integers(), max_size=2),
)
def test_other_tasks_are_not_fully_redacted(args: list[Any], kwargs: dict[str, Any]) -> None:
    """Only the named tasks are redacted whole; others get the ordinary rules."""
    policy = RedactionPolicy(fully_redacted_tasks={"billing.charge"})
    payload = redact_task_payload(
        policy, name="billing.refund", args=args, kwargs=kwargs, result=[1]
    )
    assert (payload.args, payload.kwargs, payload.result) == (args, kwargs, [1])
    assert not payload.redacted


@given(
    word=st.text(alphabet="bfghlmqz", min_size=3, max_size=8),
    style=st.sampled_from(["{w}", "{W}", "my_{w}", "my{C}", "X-{C}", "{w}_id"]),
)
def test_extra_words_are_matched_like_default_words(word: str, style: str) -> None:
    """A project's plain word matches its key in any case and separator style, as a word."""
    key = style.format(w=word, W=word.upper(), C=word.capitalize())
    policy = RedactionPolicy(extra_key_patterns=[word])
    assert redact({key: 1}, policy).value == {key: REDACTED}
    assert redact({key: 1}, DEFAULT_POLICY).value == {key: 1}
    assert redact({f"{word}x": 1}, policy).value == {f"{word}x": 1}, "a longer word is not it"
    assert redact(f"{key}=abc1", policy).value == f"{key}={REDACTED}"


# --- examples: keys ------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "db_password",
        "passwd",
        "pwd",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "accessToken",
        "csrftoken",
        "api_key",
        "apikey",
        "apiKey",
        "API-Key",
        "X-Api-Key",
        "APIKey",
        "access_key",
        "AWS_SECRET_ACCESS_KEY",
        "Authorization",
        "HTTP_AUTHORIZATION",
        "auth",
        "basic_auth",
        "credentials",
        "Cookie",
        "set-cookie",
        "session",
        "sessionid",
        "session_id",
        "private_key",
        "card number",
        "card_number",
        "cardnumber",
        "cardNumber",
        "cvv",
        "cvc",
        "cvv2",
        "ssn",
    ],
)
def test_credential_keys_are_redacted(key: str) -> None:
    """Each default key pattern, in the spellings the issue lists, redacts its value."""
    assert redact({key: "s3cr3t"}, DEFAULT_POLICY).value == {key: REDACTED}


@pytest.mark.parametrize(
    "key",
    ["author", "authority", "co_author", "authored_by", "tokenizer", "max_tokens", "classname"],
)
def test_harmless_lookalike_keys_are_not_redacted(key: str) -> None:
    """The word rule keeps ordinary words that merely contain auth, token or ssn."""
    assert redact({key: "x"}, DEFAULT_POLICY).value == {key: "x"}


def test_password_kwarg_is_redacted_with_its_whole_value() -> None:
    """password= replaces the value whatever its type, nested containers included."""
    kwargs = {"user": "bob", "password": {"old": "a", "new": ["b"]}, "n": 1}
    out = redact(kwargs, DEFAULT_POLICY)
    assert out == Redacted(
        value={"user": "bob", "password": REDACTED, "n": 1}, redacted=True, truncated=False
    )


def test_api_key_kwarg_is_redacted() -> None:
    """api_key= is a credential key."""
    assert redact({"api_key": 12345}, DEFAULT_POLICY).value == {"api_key": REDACTED}


def test_none_under_a_credential_key_is_not_a_redaction() -> None:
    """token=None holds nothing, so it stays and is not reported."""
    assert redact({"token": None}, DEFAULT_POLICY) == Redacted(
        value={"token": None}, redacted=False, truncated=False
    )


def test_authorization_header_in_a_dict_of_headers() -> None:
    """An Authorization: Bearer header is redacted; the other headers are kept."""
    headers = {"Accept": "application/json", "Authorization": "Bearer abc.def-123"}
    out = redact({"headers": headers}, DEFAULT_POLICY)
    assert out.value == {"headers": {"Accept": "application/json", "Authorization": REDACTED}}


# --- examples: values ------------------------------------------------------------


def test_database_url_in_args_keeps_all_but_the_password() -> None:
    """postgres://user:pw@host/db keeps user, host and database readable."""
    out = redact(["postgres://app:hunter2@db.internal:5432/shop", 3], DEFAULT_POLICY)
    assert out.value == [f"postgres://app:{REDACTED}@db.internal:5432/shop", 3]
    assert out.redacted


def test_url_password_with_at_signs_is_redacted_whole() -> None:
    """A user name that is an e-mail address, or a raw @ in the password, leaks nothing."""
    out = redact("smtp://me@example.com:p@ss@smtp.example.com/", DEFAULT_POLICY)
    assert out.value == f"smtp://me@example.com:{REDACTED}@smtp.example.com/"


def test_url_without_password_is_unchanged() -> None:
    """Ports, query strings and e-mail addresses are not passwords."""
    text = "http://host:8080/x?to=a@b.com user@example.com https://user@host/"
    assert redact(text, DEFAULT_POLICY).value == text


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "Proc-Type: 4,ENCRYPTED\n"
    "MIIEowIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi\n"
    "-----END RSA PRIVATE KEY-----"
)


def test_pem_block_in_a_result_is_redacted_whole() -> None:
    """A private key block in a result becomes the marker; text around it stays."""
    out = redact({"generated": f"key:\n{PEM}\ndone"}, DEFAULT_POLICY)
    assert out.value == {"generated": f"key:\n{REDACTED}\ndone"}


def test_cut_off_pem_block_is_redacted_to_the_end() -> None:
    """A block without its END line (a truncated log) is redacted to the end of the text."""
    assert redact(PEM[:70], DEFAULT_POLICY).value == REDACTED


JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


def test_jwt_in_an_exception_message() -> None:
    """A JWT inside an exception message is replaced; the message stays readable."""
    payload = redact_task_payload(
        DEFAULT_POLICY, name="app.sync", exception=f"PermissionError('expired token {JWT}')"
    )
    assert payload.exception == f"PermissionError('expired token {REDACTED}')"
    assert payload.redacted
    assert not payload.arguments_redacted


def test_aws_key_in_a_traceback() -> None:
    """An AWS access key id in traceback text is replaced."""
    traceback = (
        "Traceback (most recent call last):\n"
        '  File "/app/tasks.py", line 9, in upload\n'
        "    s3 = connect('AKIAIOSFODNN7EXAMPLE')\n"
        "botocore.exceptions.ClientError: denied\n"
    )
    payload = redact_task_payload(DEFAULT_POLICY, name="app.upload", traceback=traceback)
    assert payload.traceback == traceback.replace("AKIAIOSFODNN7EXAMPLE", REDACTED)


@pytest.mark.parametrize(
    "secret",
    [
        "ghp_" + "a1B2" * 9,
        "github_pat_" + "11ABCDEFG0" * 4,
        "xoxb-123456789012-abcdefABCDEF",
        "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
    ],
)
def test_cloud_key_shapes_are_redacted(secret: str) -> None:
    """GitHub, Slack, Stripe and Google key shapes are replaced inside any text."""
    assert redact(f"using {secret} now", DEFAULT_POLICY).value == f"using {REDACTED} now"


def test_bearer_and_basic_headers_in_text() -> None:
    """The scheme word stays, the credential goes."""
    text = "sent Authorization: Bearer abc123def456 then basic dXNlcjpwYXNzd29yZA=="
    assert redact(text, DEFAULT_POLICY).value == (
        f"sent Authorization: Bearer {REDACTED} then basic {REDACTED}"
    )


def test_prose_about_bearer_and_basic_is_kept() -> None:
    """Words after Bearer or Basic that cannot be credentials are left alone."""
    text = "Bearer tokens expire; Basic authentication failed; basic settings"
    assert redact(text, DEFAULT_POLICY).value == text


def test_assignments_in_text_are_redacted_by_key() -> None:
    """key=value and key: value in text follow the key rules, including in query strings."""
    text = "login {'password': 'hunter2', 'author': 'bob'} at /x?page=2&api_key=K3Y&q=1"
    assert redact(text, DEFAULT_POLICY).value == (
        f"login {{'password': '{REDACTED}', 'author': 'bob'}} at /x?page=2&api_key={REDACTED}&q=1"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Basic MDAwOjAwMDAwMA==github_pat_0000000000000000000000",
        "sent Basic MDAwOjAwMDAwMA==AKIAABCDEFGHIJ012345\n",
    ],
)
def test_a_replacement_that_completes_another_match_is_redacted_too(text: str) -> None:
    """When removing one credential exposes another (a boundary appears), both go in one pass."""
    out = redact(text, DEFAULT_POLICY)
    assert "MDAwOjAwMDAwMA" not in out.value
    assert out.value.count(REDACTED) == 2
    assert redact(out.value, DEFAULT_POLICY).redacted is False


def test_secrets_in_dict_keys_and_bytes_are_redacted() -> None:
    """A credential shape in a str key or in bytes is replaced too."""
    out = redact({JWT: 1, "b": JWT.encode()}, DEFAULT_POLICY)
    assert out.value == {REDACTED: 1, "b": REDACTED.encode()}


# --- policy ------------------------------------------------------------------


def test_extra_regex_key_pattern() -> None:
    """re:<regex> is searched case-insensitively in the key as written."""
    policy = RedactionPolicy(extra_key_patterns=["re:^pin(_code)?$"])
    out = redact({"PIN": 1, "pin_code": 2, "spinner": 3}, policy)
    assert out.value == {"PIN": REDACTED, "pin_code": REDACTED, "spinner": 3}


def test_extra_value_pattern_replaces_its_secret_group() -> None:
    """A project value pattern redacts its match, or only its secret group."""
    policy = RedactionPolicy(
        extra_value_patterns=[r"INT-[0-9]{6}", r"member (?P<secret>[0-9]{4,})"]
    )
    out = redact(["ref INT-123456 ok", "member 98765"], policy)
    assert out.value == [f"ref {REDACTED} ok", f"member {REDACTED}"]
    assert redact(out.value, policy).redacted is False


@pytest.mark.parametrize(
    "kwargs",
    [
        {"extra_key_patterns": ["re:("]},
        {"extra_key_patterns": ["pin*"]},
        {"extra_key_patterns": [""]},
        {"extra_key_patterns": "pin"},
        {"extra_value_patterns": ["[unclosed"]},
        {"extra_value_patterns": [r"\[z4j"]},
        {"extra_value_patterns": ["x*"]},
        {"key_words": ["Token"]},
        {"fully_redacted_tasks": "billing.charge"},
        {"fully_redacted_tasks": [""]},
        {"max_depth": 0},
        {"max_depth": 10_000},
        {"max_nodes": 0},
    ],
)
def test_invalid_policies_are_refused_at_construction(kwargs: dict[str, Any]) -> None:
    """Bad patterns (or a regex that would redact the marker) and bad limits are InvalidInput."""
    with pytest.raises(InvalidInput):
        RedactionPolicy(**kwargs)


def test_policies_are_values() -> None:
    """Equal settings make equal, hashable policies."""
    assert RedactionPolicy(extra_key_patterns=["pin"]) == RedactionPolicy(
        extra_key_patterns=("pin",)
    )
    assert hash(RedactionPolicy()) == hash(DEFAULT_POLICY)


# --- limits ------------------------------------------------------------------


def test_too_many_nodes_are_cut_with_a_marker() -> None:
    """Past max_nodes, the rest of a list (or mapping) is replaced by one marker."""
    policy = RedactionPolicy(max_nodes=4)
    assert redact(list(range(10)), policy) == Redacted(
        value=[0, 1, 2, TRUNCATED], redacted=False, truncated=True
    )
    assert redact({"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}, policy).value == {
        "a": 1,
        "b": 2,
        "c": 3,
        TRUNCATED: TRUNCATED,
    }


def test_too_deep_nesting_is_cut_with_a_marker() -> None:
    """Containers at max_depth are replaced by the marker."""
    policy = RedactionPolicy(max_depth=2)
    assert redact([1, [2, [3, [4]]]], policy) == Redacted(
        value=[1, [2, TRUNCATED]], redacted=False, truncated=True
    )


def test_a_list_that_contains_itself() -> None:
    """The repetition is replaced by the marker."""
    loop: list[Any] = [1]
    loop.append(loop)
    assert redact(loop, DEFAULT_POLICY) == Redacted(
        value=[1, TRUNCATED], redacted=False, truncated=True
    )


def test_a_mapping_that_fails_while_walked_is_redacted_whole() -> None:
    """If walking a container raises, it is replaced by the redaction marker (fail closed)."""

    class Weird(dict[str, Any]):
        def items(self) -> Any:
            raise RuntimeError("boom")

    class NoEq(str):
        __slots__ = ()

        def __eq__(self, other: object) -> bool:
            raise RuntimeError("no eq")

        __hash__ = str.__hash__

    weird_key: dict[Any, Any] = {}
    weird_key[NoEq("password")] = "x"
    out = redact([Weird(a=1), weird_key], DEFAULT_POLICY)
    assert out.value[0] == REDACTED
    assert out.redacted


@pytest.mark.parametrize(
    "text",
    [
        "a=" * 300_000,
        "eyJ" * 200_000,
        "a" * 600_000,
        "a://" * 150_000,
        "a://u:" * 100_000,
        "password='" * 60_000,
        "Bearer " * 90_000,
        "basic AAAA" * 60_000,
        "github_pat_" * 60_000,
        "-----BEGIN PRIVATE KEY-----" * 20_000,
        "token=token=" * 50_000,
    ],
    ids=lambda text: f"{text[:12]!r}x{len(text)}",
)
def test_adversarial_long_strings_are_scanned_in_linear_time(text: str) -> None:
    """Half a megabyte of repeated pattern prefixes takes well under a second, not minutes."""
    started = time.perf_counter()
    redact(text, DEFAULT_POLICY)
    # Linear scans take about 0.1 s here; a quadratic one would take hours.
    assert time.perf_counter() - started < 5


def test_common_case_copies_nothing() -> None:
    """Typical arguments without credentials come back as the same objects."""
    args = [42, "user@example.com", {"items": [{"sku": "A-1"}], "note": "2026-03-01T12:00"}]
    kwargs = {"callback_url": "https://example.com/hook", "retry": True}
    payload = redact_task_payload(DEFAULT_POLICY, name="app.x", args=args, kwargs=kwargs)
    assert payload.args is args
    assert payload.kwargs is kwargs
    assert not payload.redacted
    json.dumps(payload.args)
