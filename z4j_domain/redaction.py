"""Redaction of task payloads: credentials are replaced before anything is shown or stored.

The engine walks args (a list), kwargs (a dict), results (any JSON-like value),
exception messages and traceback text. It runs in the agent before data leaves
the worker and again in the brain; both passes use the same rules, and a second
pass over redacted data changes nothing.

**Keys.** In every mapping, at any depth, the value under a credential key is
replaced as a whole (strings, numbers, nested containers alike) by
:data:`REDACTED`; ``None`` is left alone, since it holds nothing and
``token=None`` defaults are common. A key is compared in two normalised forms:
its *words* (split at separators, camelCase humps and letter/digit boundaries,
lower-cased: ``X-Api-Key`` -> ``x api key``, ``APIKey`` -> ``api key``) and its
*compact* form (the words joined: ``xapikey``). Two kinds of default patterns:

* **Fragments** (:data:`DEFAULT_KEY_FRAGMENTS`: ``password``, ``secret``,
  ``apikey``, ``authorization``, ``cookie``, ``cardnumber``, ...) are long,
  unambiguous credential words; they match *anywhere* in the compact form, so
  ``db_password``, ``clientSecret``, ``X-Api-Key``, ``set-cookie`` and
  ``credit_card_number`` are all redacted. Rare harmless words that contain one
  (``secretary``, ``cookiecutter``) are redacted too: when in doubt, redact.
* **Words** (:data:`DEFAULT_KEY_WORDS`: ``token``, ``auth``, ``pwd``,
  ``session``, ``ssn``, ``cvv``, ``cvc``, ``jwt``) are short and occur inside
  ordinary words, so they match only as *whole words* (one word or several
  adjacent words joined: ``auth``, ``auth_header``, ``basicAuth``,
  ``session_timeout``) or at the *end* of the compact form (``accesstoken``,
  ``basicauth``, ``userpwd``). Hence ``author``, ``authority``, ``co_author``,
  ``authenticate``, ``tokenizer``, ``max_tokens`` and ``classname`` are *not*
  redacted; ``token_count``, ``session_timeout`` and ``PWD`` *are* (the exact
  word is there, so we prefer redacting). Plurals of words are not matched
  (``tokens`` in LLM tasks is a count, ``sessions`` a list).

Projects add :attr:`RedactionPolicy.extra_key_patterns`: a plain word
(letters, digits and separators: ``"pin"``, ``"card pin"``) is compacted and
matched by the *word* rule above; ``"re:<regex>"`` is a regular expression
searched, case-insensitively, in the key as written. Only ``str`` keys are
matched; other keys (ints, tuples) never are.

**Values.** In every string (values, ``str`` keys, exception messages,
tracebacks; also ``bytes``, read as Latin-1) the parts that look like a
credential are replaced, keeping the text around them readable. The defaults
(:data:`DEFAULT_VALUE_PATTERNS`, applied in this order):

* PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` to its ``END``
  line, or to the end of the text when the block was cut off): the whole block;
* URLs with a password (``scheme://user:pw@host``): the password only;
* JWTs (``eyJ...`` with three base64url segments): the whole token;
* ``Bearer <token>`` (8+ token characters with a digit, or 20+ without) and
  ``Basic <base64>`` (8+ base64 characters, a multiple of 4 long, with a
  digit, ``+``, ``/`` or ``=``, or 12+ long): the credential;
* cloud key shapes: AWS access key ids (``AKIA``/``ASIA`` + 16), GitHub tokens
  (``ghp_``, ``gho_``, ``ghu_``, ``ghs_``, ``ghr_``, ``github_pat_``), Slack
  (``xoxa-``, ``xoxb-``, ``xoxp-``, ``xoxr-``), Stripe (``sk_``/``rk_`` +
  ``live_``/``test_``), Google API keys (``AIza`` + 35): the whole key.

A value pattern is a regular expression; when it has a group named
``secret`` only that group is replaced, otherwise the whole match. Projects
add their own with :attr:`RedactionPolicy.extra_value_patterns`; a pattern
that matches inside a marker (or matches the empty string) is refused.

After the value patterns, **assignments in text** are redacted: in
``key=value`` and ``key: value`` (``password=hunter2``, ``'api_key': 'abc'``,
``?token=abc&``, ``Authorization: Token abc``), where *key* is a credential
key under the key rules above (project additions included), the value is
replaced: a quoted value up to its closing quote or the end of the line, a
bare one up to whitespace or one of ``"',;&()[]{}<>``; an authorization scheme
word before it (``Bearer``, ``Basic``, ``Token``, ``Digest``) stays. Source
lines in tracebacks lose a little (``token = get_token()`` becomes
``token = [z4j redacted]()``); we prefer that to leaking.

**Tasks.** A task named in :attr:`RedactionPolicy.fully_redacted_tasks` has
every positional argument, every keyword argument's value (the names stay) and
its result replaced; its exception and traceback get the ordinary rules.

**Limits.** Containers nested ``max_depth`` levels deep and everything after
the first ``max_nodes`` values visited (counted per payload part) are replaced
by :data:`TRUNCATED` (a mapping gets a ``TRUNCATED: TRUNCATED`` entry in place
of its remaining items); a container that contains itself is cut the same way.
Anything that raises while it is walked (a mapping that changes size, a key
whose ``__eq__`` raises) is replaced by :data:`REDACTED`: the engine never
raises and fails closed. Objects it does not know (neither str, bytes, numbers,
mappings, lists, tuples nor sets) are passed through untouched and never
``repr``-ed: redact *after* turning values into JSON (e.g.
:func:`~z4j_domain.encoding.storable_json`) so their text is covered too.

**Markers.** :data:`REDACTED` and :data:`TRUNCATED` are fixed: a retry must
recognise them (and never send one as an argument) whichever agent or brain
version wrote them, so they are not configurable. ``redacted`` and
``truncated`` in a result mean *this pass* replaced or cut something; a value
that is already a marker is left as it is and not reported again, so a brain
must keep the flags an agent reported alongside its own.

**Cost.** One walk over the value, no copy of a container unless something in
it changed: the common case returns the very same objects, and costs roughly
1 us per call and per container, 0.2 us per number and 1 us per short string
(CPython 3.11, a busy 2-core machine). Each string is first checked
by one regular expression for a literal that a default value pattern cannot
match without (``://``, ``eyJ``, ``PRIVATE KEY``, ``Bearer``, ``AKIA``, ...),
and for ``=`` or ``:`` (assignments); only strings that have one are scanned
by the patterns themselves (a few microseconds), and every scan is linear in
the string's length, also on adversarial text. Key decisions are cached per
policy (a few thousand distinct keys). Strings are not shortened.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import islice
from typing import Any, Final, Generic, TypeVar

import attrs

from z4j_domain.encoding import MAX_JSON_DEPTH
from z4j_domain.errors import InvalidInput
from z4j_domain.tasks import PAYLOAD_FLAGS, TaskEvent

__all__ = [
    "DEFAULT_KEY_FRAGMENTS",
    "DEFAULT_KEY_WORDS",
    "DEFAULT_POLICY",
    "DEFAULT_VALUE_PATTERNS",
    "REDACTED",
    "TRUNCATED",
    "Redacted",
    "RedactedPayload",
    "RedactionPolicy",
    "RedactionSettings",
    "redact",
    "redact_event",
    "redact_task_payload",
]

T = TypeVar("T")

#: What replaces a credential (a whole value, or the secret part of a string).
REDACTED: Final = "[z4j redacted]"
#: What replaces what the depth and size limits cut off, and a container's repetition of itself.
TRUNCATED: Final = "[z4j truncated]"

#: Matched anywhere in a key's compact form (lower-cased, separators removed).
DEFAULT_KEY_FRAGMENTS: Final = frozenset(
    {
        "accesskey",
        "apikey",
        "authorization",
        "cardnumber",
        "cookie",
        "credential",
        "creditcard",
        "passphrase",
        "passwd",
        "password",
        "privatekey",
        "secret",
        "sessionid",
        "sessionkey",
    }
)
#: Matched as a whole word (or adjacent words joined) of a key, or at the end of its compact form.
DEFAULT_KEY_WORDS: Final = frozenset(
    {"auth", "cvc", "cvv", "jwt", "pwd", "session", "ssn", "token"}
)

# Every pattern that can start at many places of one long run of characters
# begins with a look-behind on that run's characters, so an attempt starts only
# at the beginning of a run and the whole scan stays linear (no quadratic blow-up
# on adversarial text such as "eyJeyJeyJ..." or 1 MB of letters).
_RUN = r"(?<![A-Za-z0-9_\-])"

_PEM = (
    r"-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----"
    r"[^-]*(?:-(?!----END )[^-]*)*"
    r"(?:-----END (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----)?"
)
# userinfo is everything up to the last "@" before the path, like urllib's
# parser, so a user name that is an e-mail address or a raw "@" in a password
# still leaves nothing of the password behind.
_URL = r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s/?#:]*:(?P<secret>[^\s/?#]+)@"
_JWT = _RUN + r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
_BEARER = (
    _RUN + r"(?i:bearer)\s+(?P<secret>"
    r"(?=[A-Za-z\-._~+/]*[0-9]|[A-Za-z0-9\-._~+/]{20})"
    r"[A-Za-z0-9\-._~+/]{8,}=*)"
)
_BASIC = (
    _RUN + r"(?i:basic)\s+(?P<secret>"
    r"(?=[A-Za-z]*[0-9+/=]|[A-Za-z0-9+/]{12})"
    r"(?:[A-Za-z0-9+/]{4}){2,}(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)(?![A-Za-z0-9+/=])"
)
_CLOUD_KEYS = (
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"
    r"|" + _RUN + r"xox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|(?<![A-Za-z0-9_])[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|" + _RUN + r"AIza[A-Za-z0-9_\-]{35}(?![A-Za-z0-9_\-])"
)
#: The default value patterns, in the order they are applied (see the module docstring).
DEFAULT_VALUE_PATTERNS: Final = (_PEM, _URL, _JWT, _BEARER, _BASIC, _CLOUD_KEYS)

# "key=value" in text is found in two steps: every "key=" (cheap, no value
# consumed, so "url=/x?api_key=abc" still reaches "api_key="), then, only for
# credential keys, the value after it. One regex for both would either skip
# keys inside a harmless key's value or rescan values: quadratic on "a=a=a=...".
_ASSIGNMENT_KEY: Final = re.compile(
    r"(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*+)[\"']?[ \t]*[:=][ \t]*"
)
_ASSIGNMENT_VALUE: Final = re.compile(
    # An authorization scheme stays readable; possessive, so that a redacted
    # "Token [z4j redacted]" is not taken apart again with "Token" as the value.
    r"(?:(?i:bearer|basic|token|digest)[ \t]+)?+"
    r"(?P<q>[\"'])?"
    r"(?P<secret>(?(q)(?:(?!(?P=q))[^\n])+|[^\s\"',;&()\[\]{}<>=][^\s\"',;&()\[\]{}<>]*))"
)

# A cheap test per default pattern for a literal it cannot match without, and
# one scan for any of them first: a string without any (the common case) is not
# scanned by the patterns themselves.
_DEFAULT_HINT: Final = re.compile(
    r"://|eyJ|PRIVATE KEY|(?i:bearer|basic)|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abpr]-|[rs]k_|AIza"
)
_SCHEME_WORD: Final = re.compile(r"(?i:bearer|basic)")
_CLOUD_PREFIX: Final = re.compile(r"AKIA|ASIA|gh[pousr]_|github_pat_|xox[abpr]-|[rs]k_|AIza")
_DEFAULT_HINTS: Final[dict[str, Callable[[str], object]]] = {
    _PEM: lambda text: "PRIVATE KEY" in text,
    _URL: lambda text: "://" in text and "@" in text,
    _JWT: lambda text: "eyJ" in text,
    _BEARER: _SCHEME_WORD.search,
    _BASIC: _SCHEME_WORD.search,
    _CLOUD_KEYS: _CLOUD_PREFIX.search,
}
# No default value pattern matches fewer characters ("a://:x@", "eyJa.b.").
_MIN_DEFAULT_MATCH: Final = 7

_KEY_WORD_SPLIT: Final = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_PLAIN_WORD: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]*")
_COMPACT_WORD: Final = re.compile(r"[a-z0-9]+")
_REGEX_PREFIX: Final = "re:"
# Bounds the per-policy key cache; keys longer than this are decided each time.
_KEY_CACHE_SIZE: Final = 4096
_CACHEABLE_KEY_LENGTH: Final = 128
# Rounds of value patterns over one string before it is replaced whole. In 300k
# random mixes of pattern fragments at most two rounds changed anything; a
# round after the first costs one more scan, and only text that had a credential.
_MAX_ROUNDS: Final = 4
# Deepest nesting max_depth may allow: the walk recurses, a few frames a level.
_MAX_DEPTH_LIMIT: Final = 128


def _key_words(key: str) -> list[str]:
    return [word.lower() for word in _KEY_WORD_SPLIT.findall(key)]


def _frozenset_of_str(value: Iterable[str]) -> frozenset[str]:
    return frozenset(_tuple_of_str(value))


def _tuple_of_str(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise InvalidInput(f"expected a collection of strings, got the string {value!r}")
    try:
        return tuple(value)
    except TypeError:
        raise InvalidInput(f"expected a collection of strings, got {value!r}") from None


def _compact_words(_instance: Any, attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    for word in value:
        if not isinstance(word, str) or not _COMPACT_WORD.fullmatch(word):
            raise InvalidInput(
                f"{attribute.name}: {word!r} must be lower-case letters and digits only"
            )


def _task_names(_instance: Any, attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    for name in value:
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{attribute.name}: task names must be non-empty strings")


def _depth(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or not 1 <= value <= _MAX_DEPTH_LIMIT:
        raise InvalidInput(
            f"{attribute.name} must be an int in 1..{_MAX_DEPTH_LIMIT}, got {value!r}"
        )


def _positive(_instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if type(value) is not int or value < 1:
        raise InvalidInput(f"{attribute.name} must be a positive int, got {value!r}")


def _compile(source: object, what: str, flags: int = 0) -> re.Pattern[str]:
    if not isinstance(source, str) or not source:
        raise InvalidInput(f"{what} {source!r} must be a non-empty string")
    try:
        return re.compile(source, flags)
    except re.error as exc:
        raise InvalidInput(f"{what} {source!r} is not a valid regular expression: {exc}") from None


def _value_pattern(source: object) -> re.Pattern[str]:
    pattern = _compile(source, "value pattern")
    # A pattern that matches (part of) a marker would redact its own output
    # again on the next pass, and one that matches the empty string everywhere.
    for marker in (REDACTED, TRUNCATED):
        if pattern.search(marker) is not None:
            raise InvalidInput(f"value pattern {source!r} matches the marker {marker!r}")
    return pattern


@attrs.frozen(eq=False)
class _Rules:
    """The compiled form of a policy; built once per policy, used by every walk."""

    compact: re.Pattern[str] | None
    joined: re.Pattern[str] | None
    key_regexes: tuple[re.Pattern[str], ...]
    value_patterns: tuple[tuple[re.Pattern[str], Callable[[str], object] | None], ...]
    hint: re.Pattern[str] | None
    min_length: int
    min_assignment: int
    keys: dict[str, tuple[bool, str]] = attrs.field(factory=dict)

    def key_matches(self, key: str) -> bool:
        """Whether ``key`` is a credential key under the policy."""
        words = _key_words(key)
        compact = "".join(words)
        if self.compact is not None and self.compact.search(compact):
            return True
        if self.joined is not None and self.joined.search("_" + "_".join(words) + "_"):
            return True
        return any(regex.search(key) for regex in self.key_regexes)

    def key(self, key: str) -> tuple[bool, str]:
        """Whether ``key`` is a credential key, and its text with value patterns applied."""
        known = self.keys.get(key)
        if known is None:
            known = (self.key_matches(key), self.text(key))
            if len(key) <= _CACHEABLE_KEY_LENGTH:
                if len(self.keys) >= _KEY_CACHE_SIZE:
                    self.keys.clear()
                self.keys[key] = known
        return known

    def text(self, text: str) -> str:
        """``text`` with every value pattern's secret and every credential assignment replaced."""
        # A replacement can complete another pattern's match: the marker's "]"
        # ends a base64 run that a following key used to extend, and "Basic
        # dXNl==github_pat_..." only shows its Basic credential once the GitHub
        # token is gone. So repeat until nothing changes, which is also what
        # makes a second pass a no-op. Text that keeps changing is replaced whole.
        for _ in range(_MAX_ROUNDS):
            new = self._round(text)
            if new == text:
                return text
            text = new
        return REDACTED

    def _round(self, text: str) -> str:
        if len(text) >= self.min_length and (self.hint is None or self.hint.search(text)):
            for pattern, hint in self.value_patterns:
                if hint is None or hint(text):
                    text = pattern.sub(self._replace, text)
        if len(text) >= self.min_assignment and ("=" in text or ":" in text):
            text = self._assignments(text)
        return text

    def _replace(self, match: re.Match[str]) -> str:
        whole = match.group(0)
        if "secret" not in match.re.groupindex:
            return REDACTED if whole and whole != REDACTED else whole
        secret = match.group("secret")
        if not secret or secret == REDACTED:
            return whole
        start = match.start()
        head, tail = match.start("secret") - start, match.end("secret") - start
        return whole[:head] + REDACTED + whole[tail:]

    def _assignments(self, text: str) -> str:
        pieces: list[str] = []
        done = 0
        for match in _ASSIGNMENT_KEY.finditer(text):
            if match.start() < done or not self.key(match.group("key"))[0]:
                continue
            value = _ASSIGNMENT_VALUE.match(text, match.end())
            if value is None:
                continue
            secret = value.group("secret")
            if secret == REDACTED:
                continue
            pieces += (text[done : value.start("secret")], REDACTED)
            done = value.end("secret")
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)


def _build_rules(policy: RedactionPolicy) -> _Rules:
    fragments = set(policy.key_fragments)
    words = set(policy.key_words)
    key_regexes: list[re.Pattern[str]] = []
    for entry in policy.extra_key_patterns:
        if not isinstance(entry, str):
            raise InvalidInput(f"extra key pattern {entry!r} must be a string")
        if entry.startswith(_REGEX_PREFIX):
            key_regexes.append(
                _compile(entry[len(_REGEX_PREFIX) :], "extra key pattern", re.IGNORECASE)
            )
        elif _PLAIN_WORD.fullmatch(entry):
            words.add("".join(_key_words(entry)))
        else:
            raise InvalidInput(
                f"extra key pattern {entry!r} is neither a plain word (letters, digits, "
                f"spaces, '_', '-', '.') nor a regular expression prefixed with {_REGEX_PREFIX!r}"
            )
    alternatives = [re.escape(f) for f in sorted(fragments)]
    if words:
        alternatives.append("(?:" + "|".join(re.escape(w) for w in sorted(words)) + r")\Z")
    compact = re.compile("|".join(alternatives)) if alternatives else None
    # In "_w1_w2_..._" a pattern may span adjacent words: "_a_?p_?i_?k_?e_?y_"
    # matches "_api_key_", "_apikey_" and "_x_api_key_".
    joined = (
        re.compile("|".join("_" + "_?".join(map(re.escape, w)) + "_" for w in sorted(words)))
        if words
        else None
    )
    value_patterns = tuple(
        (_value_pattern(p), _DEFAULT_HINTS.get(p))
        for p in (*policy.value_patterns, *policy.extra_value_patterns)
    )
    defaults_only = (
        policy.value_patterns == DEFAULT_VALUE_PATTERNS and not policy.extra_value_patterns
    )
    # The shortest assignment is "<key>=v" with the shortest credential key.
    shortest_key = 1 if key_regexes else min(map(len, fragments | words), default=1)
    return _Rules(
        compact=compact,
        joined=joined,
        key_regexes=tuple(key_regexes),
        value_patterns=value_patterns,
        hint=_DEFAULT_HINT if defaults_only else None,
        min_length=_MIN_DEFAULT_MATCH if defaults_only else 1,
        min_assignment=shortest_key + 2,
    )


@attrs.frozen(kw_only=True)
class RedactionPolicy:
    """What counts as a credential, which tasks are redacted whole, and the walk's limits.

    The defaults are on: ``RedactionPolicy()`` applies every default key and
    value pattern. Invalid patterns or limits raise
    :class:`~z4j_domain.errors.InvalidInput` here, not during a walk.
    """

    #: Credential words matched anywhere in a key's compact form.
    key_fragments: frozenset[str] = attrs.field(
        default=DEFAULT_KEY_FRAGMENTS, converter=_frozenset_of_str, validator=_compact_words
    )
    #: Credential words matched as whole words of a key or at its end.
    key_words: frozenset[str] = attrs.field(
        default=DEFAULT_KEY_WORDS, converter=_frozenset_of_str, validator=_compact_words
    )
    #: Regular expressions whose matches in strings are redacted (see the module docstring).
    value_patterns: tuple[str, ...] = attrs.field(
        default=DEFAULT_VALUE_PATTERNS, converter=_tuple_of_str
    )
    #: The project's key patterns: plain words (word rule) or ``"re:<regex>"``.
    extra_key_patterns: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: The project's value patterns, applied after :attr:`value_patterns`.
    extra_value_patterns: tuple[str, ...] = attrs.field(default=(), converter=_tuple_of_str)
    #: Names of tasks whose arguments and result are replaced whole.
    fully_redacted_tasks: frozenset[str] = attrs.field(
        default=frozenset(), converter=_frozenset_of_str, validator=_task_names
    )
    #: Containers nested this deep (the value itself is depth 0) are cut off.
    max_depth: int = attrs.field(default=MAX_JSON_DEPTH, validator=_depth)
    #: Values visited per payload part before the rest is cut off.
    max_nodes: int = attrs.field(default=10_000, validator=_positive)
    _rules: _Rules = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_rules", _build_rules(self))


#: The policy with every default on and no project additions.
DEFAULT_POLICY: Final = RedactionPolicy()


@attrs.frozen(kw_only=True)
class Redacted(Generic[T]):
    """A redacted value, and whether this pass replaced or cut anything in it."""

    value: T
    #: Something was replaced by :data:`REDACTED` in this pass.
    redacted: bool
    #: Something was cut off by the limits (or a cycle) in this pass.
    truncated: bool


@attrs.frozen(kw_only=True)
class RedactedPayload:
    """A task's redacted payload, with flags for its arguments and for the whole."""

    args: list[Any] | None
    kwargs: dict[str, Any] | None
    result: Any
    exception: str | None
    traceback: str | None
    #: Something in ``args`` or ``kwargs`` was redacted: they are not the task's arguments.
    arguments_redacted: bool
    #: Something in ``args`` or ``kwargs`` was cut off by the limits.
    arguments_truncated: bool
    #: Something anywhere in the payload was redacted.
    redacted: bool
    #: Something anywhere in the payload was cut off by the limits.
    truncated: bool


def _is_marker(value: object, marker: str) -> bool:
    return type(value) is str and value == marker


class _Walk:
    """The state of one walk over one value."""

    __slots__ = ("max_depth", "max_nodes", "nodes", "path", "redacted", "rules", "truncated")

    def __init__(self, policy: RedactionPolicy) -> None:
        self.rules: _Rules = policy._rules
        self.max_depth = policy.max_depth
        self.max_nodes = policy.max_nodes
        self.nodes = 1  # the value itself
        self.path: set[int] = set()
        self.redacted = False
        self.truncated = False

    def value(self, value: Any, depth: int) -> Any:
        cls = type(value)
        if cls is str:
            return self.string(value)
        if value is None or cls is int or cls is float or cls is bool:
            return value
        if isinstance(value, str):
            return self.string(value)
        if isinstance(value, (bytes, bytearray)):
            return self.binary(value)
        if isinstance(value, Mapping):
            return self.container(value, depth, self.mapping)
        if isinstance(value, (list, tuple, set, frozenset)):
            return self.container(value, depth, self.collection)
        return value

    def string(self, value: str) -> str:
        new = self.rules.text(value)
        if new != value:
            self.redacted = True
            return new
        return value

    def binary(self, value: bytes | bytearray) -> bytes | bytearray:
        text = value.decode("latin-1")
        new = self.rules.text(text)
        if new == text:
            return value
        self.redacted = True
        return new.encode("latin-1", errors="replace")

    def container(self, value: Any, depth: int, walk: Callable[[Any, int], Any]) -> Any:
        if depth >= self.max_depth:
            self.truncated = True
            return TRUNCATED
        ident = id(value)
        if ident in self.path:
            self.truncated = True
            return TRUNCATED
        self.path.add(ident)
        try:
            return walk(value, depth)
        except Exception:
            # Whatever went wrong, the value was not fully inspected: fail closed.
            self.redacted = True
            return REDACTED
        finally:
            self.path.discard(ident)

    def item(self, item: Any, depth: int) -> Any:
        # self.value, with the scalars of the common case spared a call.
        cls = type(item)
        if cls is str:
            return self.string(item)
        if item is None or cls is int or cls is float or cls is bool:
            return item
        return self.value(item, depth)

    def collection(self, value: Any, depth: int) -> Any:
        out: list[Any] | None = None
        for index, item in enumerate(value):
            if type(item) is str and item == TRUNCATED:
                new = item  # cut by an earlier pass; not counted, so a second pass cuts nothing
            elif self.nodes >= self.max_nodes:
                self.truncated = True
                if out is None:
                    out = list(islice(value, index))
                out.append(TRUNCATED)
                break
            else:
                self.nodes += 1
                new = self.item(item, depth + 1)
            if out is not None:
                out.append(new)
            elif new is not item:
                out = list(islice(value, index))
                out.append(new)
        if out is None:
            return value
        if isinstance(value, list):
            return out
        if isinstance(value, tuple):
            return tuple(out)
        if isinstance(value, frozenset):
            return frozenset(out)
        return set(out)

    def mapping(self, value: Mapping[Any, Any], depth: int) -> Any:
        out: dict[Any, Any] | None = None
        for index, (key, item) in enumerate(value.items()):
            cut = type(item) is str and item == TRUNCATED
            if not cut and self.nodes >= self.max_nodes:
                self.truncated = True
                if out is None:
                    out = dict(islice(value.items(), index))
                out[TRUNCATED] = TRUNCATED
                break
            secret, new_key = False, key
            if isinstance(key, str):
                secret, new_key = self.rules.key(key)
                if new_key != key:
                    self.redacted = True
                else:
                    new_key = key
            if cut:
                new_item = item
            else:
                self.nodes += 1
                if not secret:
                    new_item = self.item(item, depth + 1)
                elif item is None or _is_marker(item, REDACTED):
                    new_item = item
                else:
                    self.redacted = True
                    new_item = REDACTED
            if out is not None:
                out[new_key] = new_item
            elif new_item is not item or new_key is not key:
                out = dict(islice(value.items(), index))
                out[new_key] = new_item
        return value if out is None else out


def redact(value: T, policy: RedactionPolicy) -> Redacted[T]:
    """Redact ``value`` (any JSON-like value, or text) under ``policy``; never raises.

    Unchanged containers are returned as they are, not copied: when nothing was
    redacted or cut, ``redact(v, p).value is v``.
    """
    walk = _Walk(policy)
    try:
        new = walk.value(value, 0)
    except Exception:
        # Containers guard themselves; this is for a root whose type checks raise
        # (a __class__ property that raises fools isinstance). Fail closed.
        new, walk.redacted = REDACTED, True
    return Redacted(value=new, redacted=walk.redacted, truncated=walk.truncated)


def _redact_whole(value: Any) -> Redacted[Any]:
    if value is None or _is_marker(value, REDACTED):
        return Redacted(value=value, redacted=False, truncated=False)
    return Redacted(value=REDACTED, redacted=True, truncated=False)


def _redact_all(
    policy: RedactionPolicy, args: list[Any] | None, kwargs: dict[str, Any] | None
) -> tuple[Redacted[list[Any] | None], Redacted[dict[str, Any] | None]]:
    """Every argument replaced; keyword names kept (with value patterns applied)."""
    new_args, new_kwargs = args, kwargs
    redacted_args = redacted_kwargs = False
    if args is not None:
        try:
            items = [_redact_whole(item) for item in args]
            redacted_args = any(item.redacted for item in items)
            if redacted_args:
                new_args = [item.value for item in items]
        except Exception:
            new_args, redacted_args = [REDACTED], True
    if kwargs is not None:
        try:
            out: dict[str, Any] = {}
            for key, item in kwargs.items():
                whole = _redact_whole(item)
                new_key = policy._rules.key(key)[1] if isinstance(key, str) else key
                redacted_kwargs = redacted_kwargs or whole.redacted or new_key != key
                out[new_key] = whole.value
            if redacted_kwargs:
                new_kwargs = out
        except Exception:
            new_kwargs, redacted_kwargs = {REDACTED: REDACTED}, True
    return (
        Redacted(value=new_args, redacted=redacted_args, truncated=False),
        Redacted(value=new_kwargs, redacted=redacted_kwargs, truncated=False),
    )


def redact_task_payload(
    policy: RedactionPolicy,
    *,
    name: str | None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    result: Any = None,
    exception: str | None = None,
    traceback: str | None = None,
    whole: bool = False,
) -> RedactedPayload:
    """Redact everything a task event carries, applying the fully-redacted rule for ``name``.

    ``whole`` applies that rule whatever the name (a task marked in code).
    """
    fully = whole or (name is not None and name in policy.fully_redacted_tasks)
    if not (fully or args or kwargs or result or exception or traceback):
        # Empty or absent values hold nothing to redact or cut: most events, spared the walk.
        return RedactedPayload(
            args=args,
            kwargs=kwargs,
            result=result,
            exception=exception,
            traceback=traceback,
            arguments_redacted=False,
            arguments_truncated=False,
            redacted=False,
            truncated=False,
        )
    if fully:
        args_r, kwargs_r = _redact_all(policy, args, kwargs)
        result_r = _redact_whole(result)
    else:
        args_r, kwargs_r, result_r = (
            redact(args, policy),
            redact(kwargs, policy),
            redact(result, policy),
        )
    exception_r, traceback_r = redact(exception, policy), redact(traceback, policy)
    parts = (args_r, kwargs_r, result_r, exception_r, traceback_r)
    return RedactedPayload(
        args=args_r.value,
        kwargs=kwargs_r.value,
        result=result_r.value,
        exception=exception_r.value,
        traceback=traceback_r.value,
        arguments_redacted=args_r.redacted or kwargs_r.redacted,
        arguments_truncated=args_r.truncated or kwargs_r.truncated,
        redacted=any(part.redacted for part in parts),
        truncated=any(part.truncated for part in parts),
    )


#: Most patterns (of each kind) and task names a project may add.
MAX_PROJECT_PATTERNS: Final = 100
#: Longest pattern or task name a project may add, in characters.
MAX_PATTERN_LENGTH: Final = 500


def _settings_list(name: str) -> Callable[[Any, Any, tuple[str, ...]], None]:
    def check(_instance: Any, _attribute: Any, value: tuple[str, ...]) -> None:
        if len(value) > MAX_PROJECT_PATTERNS:
            raise InvalidInput(f"{name}: at most {MAX_PROJECT_PATTERNS} entries")
        for item in value:
            if not item.strip() or len(item) > MAX_PATTERN_LENGTH:
                raise InvalidInput(
                    f"{name}: entries must be non-blank and at most {MAX_PATTERN_LENGTH} characters"
                )

    return check


def _sorted_unique(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(_tuple_of_str(value))))


@attrs.frozen(kw_only=True)
class RedactionSettings:
    """A project's additions to the default redaction, as stored by the brain and sent to agents.

    The defaults cannot be turned off; a project can only add key patterns,
    value patterns and names of tasks to redact whole (see
    :class:`RedactionPolicy`). :meth:`policy` validates the patterns.
    """

    extra_key_patterns: tuple[str, ...] = attrs.field(
        default=(), converter=_sorted_unique, validator=_settings_list("extra_key_patterns")
    )
    extra_value_patterns: tuple[str, ...] = attrs.field(
        default=(), converter=_sorted_unique, validator=_settings_list("extra_value_patterns")
    )
    fully_redacted_tasks: tuple[str, ...] = attrs.field(
        default=(), converter=_sorted_unique, validator=_settings_list("fully_redacted_tasks")
    )

    def policy(self) -> RedactionPolicy:
        """The policy these settings give (built once per distinct settings, then cached)."""
        return _policy_of(self)

    def to_dict(self) -> dict[str, list[str]]:
        """The JSON form (what the API shows and the brain sends agents)."""
        return {
            "extra_key_patterns": list(self.extra_key_patterns),
            "extra_value_patterns": list(self.extra_value_patterns),
            "fully_redacted_tasks": list(self.fully_redacted_tasks),
        }

    @classmethod
    def from_dict(cls, data: object) -> RedactionSettings:
        """Read the JSON form; missing keys are empty; raises :class:`InvalidInput`."""
        if not isinstance(data, Mapping):
            raise InvalidInput("redaction settings must be a JSON object")
        unknown = set(data) - {"extra_key_patterns", "extra_value_patterns", "fully_redacted_tasks"}
        if unknown:
            raise InvalidInput(
                f"unknown redaction setting(s): {', '.join(sorted(map(str, unknown)))}"
            )
        values: dict[str, tuple[str, ...]] = {}
        for name in ("extra_key_patterns", "extra_value_patterns", "fully_redacted_tasks"):
            items = data.get(name) or []
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise InvalidInput(f"{name} must be a list of strings")
            values[name] = tuple(items)
        settings = cls(**values)
        settings.policy()  # refuse invalid patterns now, not on the ingest path
        return settings


@functools.lru_cache(maxsize=64)
def _policy_of(settings: RedactionSettings) -> RedactionPolicy:
    return RedactionPolicy(
        extra_key_patterns=settings.extra_key_patterns,
        extra_value_patterns=settings.extra_value_patterns,
        fully_redacted_tasks=settings.fully_redacted_tasks,
    )


def redact_event(
    event: TaskEvent, policy: RedactionPolicy, *, fully_redacted: bool = False
) -> TaskEvent:
    """``event`` with its payload redacted under ``policy`` and its flags updated.

    ``fully_redacted`` redacts the task whole whatever its name (the agent's
    per-task option in code). Flags already set on the event stay set, so a
    second pass (the brain's, after the agent's) keeps what the first reported.
    Returns ``event`` itself when nothing changed.
    """
    payload = redact_task_payload(
        policy,
        name=event.name,
        whole=fully_redacted,
        args=event.args,
        kwargs=event.kwargs,
        result=event.result,
        exception=event.exception,
        traceback=event.traceback,
    )
    if not (payload.redacted or payload.truncated):
        return event
    return attrs.evolve(
        event,
        args=payload.args,
        kwargs=payload.kwargs,
        result=payload.result,
        exception=payload.exception,
        traceback=payload.traceback,
        **{flag: getattr(event, flag) or getattr(payload, flag) for flag in PAYLOAD_FLAGS},
    )
