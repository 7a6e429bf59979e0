"""Optional PII redaction at the collector edge, before anything reaches Kafka.

Users in health, finance and security cannot let an e-mail address, a card number or an API key
that slipped into a prompt be written to Kafka and ClickHouse, where it would be copied, retained
and hard to delete. Redacting in the collector means no downstream component (and no topic, log or
dead-letter message) ever holds the original text. Redaction is off by default: it costs CPU on the
hot path, and most deployments want the prompts as they were.

What is covered: every string value in resource, span, span event and span link attributes of an
OTLP trace request, and in log record bodies, log record attributes and resource attributes of an
OTLP logs request, including strings nested in array and key-value-list values (down to
``MAX_NESTING_DEPTH`` levels; deeper values are left alone and counted as ``depth_limit``).
JSON-encoded attributes (``gen_ai.input.messages``) are redacted as text and stay valid JSON: a
match never splits an escape sequence, the replacement holds no quote or backslash, and a card
number written as a bare JSON number is replaced by a JSON string.

What is not covered: span names, event names, status messages, scope attributes, trace state,
bytes values and attribute keys; data the detectors do not recognise (names, addresses, free-form
identifiers, internationalised e-mail addresses, AWS secret access keys, which look like any other
40-character string). Detection is pattern-based: it lowers the risk, it does not prove absence.

Each redaction is counted by kind (``email``, ``phone``, ``credit_card``, ``iban``,
``national_id``, ``secret``, a custom pattern's name, ``depth_limit``), so operators can see what
the edge removed without seeing what it was.

Spans written straight into the raw topics by an OpenTelemetry Collector never pass this edge;
the normalizer applies the same settings to them (``processors/normalize/stage.py``). Recall and
precision on a labeled set: ``bench/redaction.py``.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import BaseModel, ConfigDict, Field, field_validator

DetectorName = Literal["email", "phone", "credit_card", "iban", "national_id", "secret"]
ALL_DETECTORS: tuple[DetectorName, ...] = (
    "email",
    "phone",
    "credit_card",
    "iban",
    "national_id",
    "secret",
)
DEPTH_LIMIT_KIND = "depth_limit"
# Array and key-value-list values nested deeper than this are not inspected: a hostile request
# could otherwise make the collector recurse as deep as protobuf's own limit (100) allows.
MAX_NESTING_DEPTH = 32
# A replacement can uncover a match that a neighbouring character hid (a key glued to the end of a
# card number); redacting again until nothing changes makes redaction idempotent. Bounded, so a
# custom pattern that matches its own replacement cannot loop forever.
_MAX_ROUNDS = 4
# ... but a match between two of these characters (or the ends of the text) cannot change what
# any built-in detector sees around it: none of their patterns holds or looks through them. So a
# text whose every match sits between them needs no second round (an address in prose or in a
# JSON string). "." and "-" are not among them: phone numbers and e-mail addresses contain them.
_SETTLED_NEIGHBOURS = frozenset(" \t\n\r\f\v\"',;:!?<>[]{}|")
# Most attribute values repeat from span to span (model names, systems, hosts, environments), so
# a Redactor remembers short values it found nothing in. Only clean values are kept: the cache
# never holds what it would have redacted.
_CLEAN_CACHE_MAX_LENGTH = 128
_CLEAN_CACHE_MAX_ENTRIES = 8192

_FORBIDDEN_REPLACEMENT_CHARACTERS = re.compile(r'["\\\x00-\x1f\x7f]')


class CustomPattern(BaseModel):
    """A user-supplied regular expression whose matches are redacted and counted under its name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description=(
            "Kind reported in the counts and in the replacement's {kind}. Several patterns may "
            "share a name, and a built-in kind may be reused (their counts add up)."
        ),
    )
    pattern: str = Field(
        description=(
            "Python regular expression. Checked when the config is loaded: it must compile and "
            "must not be able to match the empty string."
        ),
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if value == DEPTH_LIMIT_KIND:
            raise ValueError(f"{DEPTH_LIMIT_KIND!r} is reserved for values nested too deep")
        return value

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as error:
            raise ValueError(
                f"{value!r} is not a valid regular expression: {error.msg} at position {error.pos}"
            ) from None
        if compiled.search("") is not None or _minimum_match_width(value) == 0:
            raise ValueError(
                f"{value!r} can match the empty string; every match must consume at least one "
                "character"
            )
        return value


class RedactionConfig(BaseModel):
    """Which PII the collector redacts from telemetry before it reaches Kafka."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=False,
        description=(
            "Redact PII in incoming telemetry: in the collector before anything reaches Kafka, "
            "and in the normalizer for raw-topic records that the collector did not redact with "
            "these settings (written by an OpenTelemetry Collector's Kafka exporter), before "
            "they are normalized or stored. A Redactor itself always applies its detectors."
        ),
    )
    detectors: list[DetectorName] = Field(
        default_factory=lambda: list(ALL_DETECTORS),
        description=(
            "Built-in detectors to run: email, phone (international +CC, North American and "
            "national trunk-0 numbers), credit_card (Luhn-checked), iban (mod-97-checked), "
            "national_id (US SSN, UK National Insurance number, Spanish DNI/NIE, French NIR), "
            "secret (API keys, tokens, JWTs, private keys, Bearer and labeled credentials)."
        ),
    )
    custom_patterns: list[CustomPattern] = Field(
        default_factory=list,
        description="Extra regular expressions to redact, run after the built-in detectors.",
    )
    replacement: str = Field(
        default="[REDACTED:{kind}]",
        description=(
            "Text that replaces each match; {kind} is the only placeholder. No quotes, "
            "backslashes or control characters, so redacted JSON-encoded attributes stay valid."
        ),
    )
    skip_attribute_keys: list[str] = Field(
        default_factory=list,
        description=(
            "Attribute keys whose values are never redacted (exact match, at any nesting level)."
        ),
    )

    def fingerprint(self) -> str:
        """A digest of what these settings redact, sent in the ``llmtap.redacted`` header: a
        consumer redacting with the same settings can trust a record that carries it."""
        document = self.model_dump_json(exclude={"enabled"})
        return hashlib.sha256(document.encode()).hexdigest()[:16]

    @field_validator("replacement")
    @classmethod
    def _check_replacement(cls, value: str) -> str:
        try:
            fields = list(string.Formatter().parse(value))
        except ValueError as error:
            raise ValueError(
                f"{value!r} is not a valid format string ({error}); write a literal brace as "
                "{{ or }}"
            ) from None
        for _, field_name, format_spec, conversion in fields:
            if field_name is None:
                continue
            if field_name != "kind" or format_spec or conversion:
                placeholder = "{" + field_name + (f"!{conversion}" if conversion else "")
                placeholder += (f":{format_spec}" if format_spec else "") + "}"
                raise ValueError(
                    f"{value!r} has the placeholder {placeholder}; only {{kind}} is allowed"
                )
        if _FORBIDDEN_REPLACEMENT_CHARACTERS.search(value.format(kind="kind")):
            raise ValueError(
                f"{value!r} holds a quote, backslash or control character; it would break "
                "JSON-encoded attributes"
            )
        return value


def _minimum_match_width(pattern: str) -> int | None:
    """The shortest match CPython's parser allows for ``pattern``, or None if it cannot tell.

    There is no public API for this; ``re._parser`` is the module ``re.compile`` itself uses.
    """
    try:
        parser = importlib.import_module("re._parser")
        return int(parser.parse(pattern).getwidth()[0])
    except Exception:  # private API: a change in it must not break config loading
        return None


# --- Detectors -------------------------------------------------------------------------------

Span = tuple[int, int]


def _compile(pattern: str) -> re.Pattern[str]:
    # ASCII: \d and \w mean [0-9] and [A-Za-z0-9_], as in the formats the detectors look for.
    return re.compile(pattern, re.ASCII)


@dataclass(frozen=True, slots=True)
class _Detector:
    """One pattern: ``find`` gives the spans to redact, in order and without overlaps."""

    kind: str
    find: Callable[[str], Iterable[Span]]
    # Cheap checks that let a string skip ``find``: it must be at least min_length characters
    # long, hold one of the triggers and one of the shapes (see _shape_of; when any are given),
    # and (when given) a match of the precheck pattern.
    min_length: int = 1
    triggers: tuple[str, ...] = ()
    shapes: tuple[bytes, ...] = ()
    precheck: re.Pattern[str] | None = None


@dataclass(frozen=True, slots=True)
class _Bounded:
    """A pattern that must not follow certain characters, in the two forms a detector needs.

    ``pattern`` checks what precedes the match; ``continuation`` does not, and is tried right
    after a redacted match, as if its replacement (ending in "]", which no detector refuses to
    follow) were already there. So "+441632960960+441632960961" loses both numbers in one pass,
    where a lookbehind that sees the first number's last digit would refuse the second.

    Python's regex engine scans fast only for a pattern that starts with a literal (or a
    character class), so the head is consumed before the check: "sk-(?<![A-Za-z0-9_-]...)"
    rather than "(?<![A-Za-z0-9_-])sk-". On a 2 KB prompt that is about 1 against 20
    microseconds per pattern.
    """

    pattern: re.Pattern[str]
    continuation: re.Pattern[str]


def _bounded(head: str, head_width: int, not_after: str, tail: str) -> _Bounded:
    """``head`` (``head_width`` characters) then ``tail``, not after a ``not_after`` character.

    A JSON escape (``\\n``, ``\\t`` ...) counts as a boundary although it ends in a letter:
    in ``"note:\\n+44 20 7946 0958"`` the number starts a line.
    """
    anything = f"(?s:.){{{head_width}}}"
    check = f"(?:(?<!{not_after}{anything})|(?<=\\\\[bfnrt]{anything}))"
    return _Bounded(_compile(head + check + tail), _compile(head + tail))


def _regex_detector(
    kind: str,
    pattern: re.Pattern[str] | _Bounded,
    spans_of: Callable[[re.Match[str]], Iterable[Span]] | None = None,
    *,
    min_length: int = 1,
    triggers: tuple[str, ...] = (),
    shapes: tuple[bytes, ...] = (),
) -> _Detector:
    """A detector that redacts the matches of ``pattern`` (or the spans ``spans_of`` picks)."""
    if isinstance(pattern, _Bounded):
        search, continuation = pattern.pattern, pattern.continuation
    else:
        search, continuation = pattern, None

    def find(text: str) -> Iterator[Span]:
        position = 0
        after_redaction = False
        while True:
            match = None
            if after_redaction and continuation is not None:
                match = continuation.match(text, position)
            if match is None:
                match = search.search(text, position)
                if match is None:
                    return
            spans = [match.span()] if spans_of is None else list(spans_of(match))
            yield from spans
            after_redaction = bool(spans) and spans[-1][1] == match.end()
            position = max(match.end(), match.start() + 1)

    return _Detector(kind, find, min_length, triggers, shapes, precheck=search)


# E-mail: found from each "@" outwards instead of by scanning the whole text with one regex,
# which costs about 30 microseconds on a 2 KB prompt. Like (?<![local])[local]{1,64}@domain:
# the local part is the whole run of local-part characters before the "@".
_EMAIL_LOCAL_PART_REVERSED = _compile(r"[A-Za-z0-9._%+-]{1,65}")
_EMAIL_DOMAIN = _compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}(?![A-Za-z0-9-])"
)


def _find_emails(text: str) -> Iterator[Span]:
    # The local part may not reach back into the previous address: that one is redacted, and its
    # replacement ends the run as any other character outside the local-part set would.
    previous_end = 0
    at = text.find("@")
    while at >= 0:
        local = _EMAIL_LOCAL_PART_REVERSED.match(text[max(previous_end, at - 65) : at][::-1])
        if local is not None and local.end() <= 64:
            domain = _EMAIL_DOMAIN.match(text, at + 1)
            if domain is not None:
                yield at - local.end(), domain.end()
                previous_end = domain.end()
        at = text.find("@", at + 1)


_PHONE_INTERNATIONAL = _bounded(
    # +CC then digit groups, each optionally after one space, dot or dash, or in parentheses.
    # Possessive quantifiers: a long digit run fails in linear time instead of backtracking.
    r"\+",
    1,
    r"[\w+]",
    r"\d++(?:[ .-]?+(?:\(\d++\)|\d++))*+(?!\w)",
)


def _international_phone(match: re.Match[str]) -> Iterator[Span]:
    # E.164 numbers have at most 15 digits; at least 9 keeps short codes and small numbers out.
    if 9 <= _count_digits(match.group()) <= 15:
        yield match.span()


_PHONE_NORTH_AMERICAN = _bounded(
    # [+1 ](415) 555-2671, 415-555-2671, 415.555.2671, 1 415 555 2671. Separators are required,
    # so timestamps and ids (plain digit runs) never match. The first character is consumed and
    # checked, then the branch for it runs.
    r"[+(1-9]",
    1,
    r"[\w+.-]",
    r"(?:(?<=\+)1[ .-]?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[ .-])"
    r"|(?<=1)[ .-]?(?:\([2-9]\d\d\)[ .-]?|[2-9]\d\d[ .-])"
    r"|(?<=\()[2-9]\d\d\)[ .-]?"
    r"|(?<=[2-9])\d\d[ .-])"
    r"\d{3}[ .-]\d{4}(?!\w|[.-]\d)",
)

# Numbers dialled with a trunk 0 (or 00 then the country code): UK 020 7946 0958 and
# 07700 900123, DE 030 12345678, 030/1234567 and (089) 1234567, FR 06 12 34 56 78 and
# 06.12.34.56.78, NL 020 123 4567. The area code and at least one separator are required, so
# plain digit runs (ids, timestamps) never match; dates have too few digits. The head is the
# literal "0" (a "(" before it is taken in by _national_phone): a character-class head would
# cost a scan of the whole text, about 10 microseconds per 2 KB.
_PHONE_NATIONAL = _bounded(
    "0",
    1,
    r"[\w+./:-]",
    # Not right after another digit group: "5544 0471 0480 3095" is a card-like number and
    # "GB38 GRWP 5912 0134 3962 39" an account, neither holds a phone number.
    r"(?:(?<=\(0)\d{1,4}\) ?|(?<!\d[ .-]0)\d{1,4}[ ./-])"
    r"\d{2,8}(?:[ .-]\d{2,8}){0,3}(?!\w|[./:-]\d)",
)


def _national_phone(match: re.Match[str]) -> Iterator[Span]:
    # 10 (FR, NL, DE) to 12 (DE) digits with the trunk 0; 00 and the country code instead of the
    # 0 make up to 17 (E.164's 15 and the 00).
    number = match.group()
    digits = _count_digits(number)
    if 10 <= digits <= 12 or (12 < digits <= 17 and number.startswith("00")):
        # "(089) 1234567": the parenthesis before the area code goes too.
        yield (match.start() - 1 if ")" in number else match.start()), match.end()


# A run of digit groups joined by single spaces or dashes that holds at least 13 digits;
# _card_numbers finds the Luhn-valid card numbers in it.
_CARD_RUN = _bounded(r"\d", 1, r"\d", r"(?=(?:[ -]?\d){12})\d*(?:[ -]\d+)*")
_DIGIT_GROUP = _compile(r"\d+")
_DOUBLED_DIGIT = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_valid(digits: str) -> bool:
    """True if the digit string passes the Luhn checksum that every payment card number carries."""
    total = sum(map(int, digits[-1::-2])) + sum(_DOUBLED_DIGIT[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def _card_numbers(match: re.Match[str]) -> Iterator[Span]:
    """Luhn-valid card numbers inside a run of digit groups (``4111 1111 1111 1111 12 25``).

    A card is one group of 13-19 digits, or consecutive groups of 13-19 digits in all whose first
    group has 4 digits and the others 3-6 (4-4-4-4, 4-6-5, 4-4-4-4-3). The first digit must be 2-6
    (the card networks' industry identifiers), which keeps millisecond timestamps out.
    """
    text = match.group()
    groups = [group.span() for group in _DIGIT_GROUP.finditer(text)]
    offset = match.start()
    first = 0
    while first < len(groups):
        last = _card_at(text, groups, first)
        if last is None:
            first += 1
        else:
            yield offset + groups[first][0], offset + groups[last][1]
            first = last + 1


def _card_at(text: str, groups: list[Span], first: int) -> int | None:
    """Index of the last group of the longest card that starts at group ``first``, if any."""
    start, end = groups[first]
    if text[start] not in "23456":
        return None
    if 13 <= end - start <= 19:
        return first if luhn_valid(text[start:end]) else None
    if end - start != 4:
        return None
    candidates: list[int] = []
    digits = 4
    for last in range(first + 1, len(groups)):
        length = groups[last][1] - groups[last][0]
        digits += length
        if not 3 <= length <= 6 or digits > 19:
            break
        if digits >= 13:
            candidates.append(last)
    for last in reversed(candidates):
        if luhn_valid("".join(text[a:b] for a, b in groups[first : last + 1])):
            return last
    return None


_US_SOCIAL_SECURITY_NUMBER = _bounded(
    # ddd-dd-dddd (dashes only; nine bare digits are too often something else). Area 000, 666
    # and 900-999, group 00 and serial 0000 are never issued.
    r"\d",
    1,
    r"[\w-]",
    r"\d\d(?<!000|666)(?<!9\d\d)-(?!00)\d\d-(?!0000)\d{4}(?![\w-])",
)
_UK_NATIONAL_INSURANCE_NUMBER = _bounded(
    # AB123456C or AB 12 34 56 C. D, F, I, Q, U and V never start one, O is never second, and
    # BG, GB, KN, NK, NT, TN and ZZ are not allocated.
    r"[A-CEGHJ-PR-TW-Z]",
    1,
    r"\w",
    r"[A-CEGHJ-NPR-TW-Z](?<!BG|GB|KN|NK|NT|TN|ZZ) ?\d\d ?\d\d ?\d\d ?[A-D](?!\w)",
)


_SPANISH_DNI = _bounded(
    # DNI 12345678Z and NIE X1234567L (a dash before the letter allowed); the letter is a
    # checksum of the number, so only 1 in 23 look-alikes passes.
    r"[0-9XYZ]",
    1,
    r"[\w-]",
    r"(?:(?<=[XYZ])-?\d{7}|(?<=\d)\d{7})-?[A-Z](?![\w-])",
)
_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def _spanish_dni(match: re.Match[str]) -> Iterator[Span]:
    text = match.group().replace("-", "")
    number = "XYZ".index(text[0]) if text[0] in "XYZ" else text[0]
    if _DNI_LETTERS[int(f"{number}{text[1:-1]}") % 23] == text[-1]:
        yield match.span()


_FRENCH_NIR = _bounded(
    # Numéro de sécurité sociale: sex, year, month, department (2A/2B in Corsica), commune,
    # order, then a two-digit key (97 minus the number modulo 97), optionally spaced as printed
    # on the card: 1 85 05 78 006 084 36.
    r"[12]",
    1,
    r"[\w.-]",
    r" ?\d\d ?\d\d ?(?:\d\d|2[AB]) ?\d{3} ?\d{3} ?\d\d(?![\w-]|[ .]\d)",
)


def _french_nir(match: re.Match[str]) -> Iterator[Span]:
    digits = match.group().replace(" ", "")
    number = digits[:13].replace("2A", "19").replace("2B", "18")
    if int(digits[13:]) == 97 - int(number) % 97:
        yield match.span()


# IBAN lengths by country (ISO 13616 registry); a country code not listed is not an IBAN.
_IBAN_LENGTHS = {
    **dict.fromkeys(("NO",), 15),
    **dict.fromkeys(("BE",), 16),
    **dict.fromkeys(("DK", "FI", "FO", "GL", "NL"), 18),
    **dict.fromkeys(("MK", "SI"), 19),
    **dict.fromkeys(("AT", "BA", "EE", "KZ", "LT", "LU", "XK"), 20),
    **dict.fromkeys(("CH", "HR", "LI", "LV"), 21),
    **dict.fromkeys(("BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"), 22),
    **dict.fromkeys(("AE", "GI", "IL", "IQ", "TL"), 23),
    **dict.fromkeys(("CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"), 24),
    **dict.fromkeys(("PT", "ST"), 25),
    **dict.fromkeys(("IS", "TR"), 26),
    **dict.fromkeys(("FR", "GR", "IT", "MC", "MR", "SM"), 27),
    **dict.fromkeys(("AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "PL", "SV"), 28),
    **dict.fromkeys(("BR", "EG", "PS", "QA", "UA"), 29),
    **dict.fromkeys(("JO", "KW", "MU"), 30),
    **dict.fromkeys(("MT", "SC"), 31),
    **dict.fromkeys(("LC",), 32),
}
_IBAN = _bounded(
    # Country, two check digits, then the account in groups of four (printed) or not
    # (electronic). _ibans checks the country's length and the mod-97 checksum.
    r"[A-Z]",
    1,
    r"[A-Za-z0-9]",
    r"[A-Z]\d\d(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
)


def iban_valid(compact: str) -> bool:
    """True if the IBAN (no spaces) passes its ISO 7064 mod-97 checksum."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1


def _ibans(match: re.Match[str]) -> Iterator[Span]:
    text = match.group()
    length = _IBAN_LENGTHS.get(text[:2])
    if length is None:
        return
    # The match may run on into a following group ("... 0130 00 1234"): cut it at the
    # country's length, where a space must follow.
    end = 0
    characters = 0
    while characters < length and end < len(text):
        if text[end] != " ":
            characters += 1
        end += 1
    at_group_end = end == len(text) or text[end] == " "
    if characters == length and at_group_end and iban_valid(text[:end].replace(" ", "")):
        yield match.start(), match.start() + end


def _bearer_token(match: re.Match[str]) -> Iterator[Span]:
    yield match.span("token")


# A credential that only its label marks as one: ``X-Api-Key: 31cdaa14...``,
# ``api_key="..."``, ``"client_secret": "..."``, ``password=...``. The label stays, the value
# goes. "token" alone is not a label: LLM telemetry is full of token counts. Matched in the
# lower-cased text, one pattern per label, each with a literal head (a case-insensitive
# alternation would cost a scan of about 10 microseconds per 2 KB).
_CREDENTIAL_VALUE = r"\\?[\"']?[ \t]*[:=][ \t]*\\?[\"']?(?P<token>[a-z0-9._~+/=-]{8,})"
_CREDENTIAL_LABELS = tuple(
    _compile(label + _CREDENTIAL_VALUE)
    for label in (
        r"key(?:(?<=apikey)|(?<=api[_ -]key))",
        r"token(?:(?<=accesstoken)|(?<=access[_ -]token)|(?<=authtoken)|(?<=auth[_ -]token)"
        r"|(?<=refreshtoken)|(?<=refresh[_ -]token))",
        r"secret(?:[_-]?key)?",
        r"passw(?:or)?d",
    )
)


def _find_labeled_credentials(text: str) -> Iterator[Span]:
    lowered = text.lower()
    if len(lowered) != len(text):  # a few non-ASCII letters lower-case to two characters
        lowered = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    spans: list[Span] = []
    for label in _CREDENTIAL_LABELS:
        for match in label.finditer(lowered):
            # A value with a letter and a digit: "your_api_key_here" and "1024" are no secrets.
            token = match.group("token")
            if _count_digits(token) and not token.isdigit():
                spans.append(match.span("token"))
    end = 0
    for start, stop in sorted(spans):
        if start >= end:
            yield start, stop
            end = stop


_SECRET_DETECTORS: tuple[_Detector, ...] = (
    # PEM private key block up to its END line, or a truncated one up to the end of its body.
    # [^"] keeps the match inside one JSON string; \\ lets it cross JSON's \n escapes.
    _regex_detector(
        "secret",
        _compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY-----"
            r'(?:[^"]*?-----END[A-Z0-9 ]*PRIVATE KEY-----|[A-Za-z0-9+/=\s\\:,-]*)'
        ),
        min_length=26,
        triggers=("-----BEGIN",),
    ),
    # JWT: base64url JSON header and payload (both start with eyJ, '{"'), then the signature.
    _regex_detector(
        "secret",
        _bounded(
            "eyJ", 3, "[A-Za-z0-9_-]", r"[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"
        ),
        min_length=28,
        triggers=("eyJ",),
    ),
    # OpenAI (sk-, sk-proj-) and Anthropic (sk-ant-) keys. Requiring a digit keeps slugs such as
    # "sk-learn-tutorial-for-beginners" out.
    _regex_detector(
        "secret",
        _bounded("sk-", 3, "[A-Za-z0-9_-]", r"(?:ant-|proj-)?(?=[A-Za-z_-]*\d)[A-Za-z0-9_-]{20,}"),
        min_length=23,
        triggers=("sk-",),
    ),
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    _regex_detector(
        "secret",
        _bounded("A(?:KIA|SIA)", 4, "[A-Za-z0-9]", "[A-Z0-9]{16}(?![A-Za-z0-9])"),
        min_length=20,
        triggers=("AKIA", "ASIA"),
    ),
    # GitHub tokens: personal (ghp_), OAuth (gho_), user-to-server (ghu_), server-to-server
    # (ghs_), refresh (ghr_) and fine-grained personal (github_pat_). Every one holds a "_",
    # which prose rarely does.
    _regex_detector(
        "secret",
        _bounded(
            "g", 1, "[A-Za-z0-9_]", "(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})"
        ),
        min_length=33,
        triggers=("_",),
    ),
    # Slack bot, app, user and refresh tokens.
    _regex_detector(
        "secret",
        _bounded("xox", 3, "[A-Za-z0-9]", "[abpr]-[A-Za-z0-9-]{10,}"),
        min_length=15,
        triggers=("xox",),
    ),
    # Google API keys.
    _regex_detector(
        "secret",
        _bounded("AIza", 4, "[A-Za-z0-9_-]", "[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])"),
        min_length=39,
        triggers=("AIza",),
    ),
    # Stripe secret and restricted keys (live and test) and Hugging Face access tokens: one
    # detector, as each one costs a pass of the checks below for every value.
    _regex_detector(
        "secret",
        _bounded(
            "(?:[rs]k|hf)_",
            3,
            "[A-Za-z0-9_-]",
            "(?:(?<=k_)(?:live|test)_[A-Za-z0-9]{20,}|(?<=hf_)[A-Za-z0-9]{34}(?![A-Za-z0-9_]))",
        ),
        min_length=28,
        triggers=("k_live_", "k_test_", "hf_"),
    ),
    # "Authorization: Bearer <token>" (or bearer, BEARER) pasted into text: the scheme name
    # stays, the token goes.
    _regex_detector(
        "secret",
        _bounded(
            "[Bb]", 1, "[A-Za-z0-9]", r"(?:earer|EARER)[ \t]+(?P<token>[A-Za-z0-9._~+/-]{16,}=*)"
        ),
        _bearer_token,
        min_length=23,
        triggers=("earer", "EARER"),
    ),
    # Last: a value that a detector above already replaced is not taken again.
    _Detector(
        "secret",
        _find_labeled_credentials,
        min_length=15,
        triggers=("key", "Key", "KEY", "oken", "OKEN", "ecret", "ECRET", "assw", "ASSW"),
    ),
)

# Order matters: secrets first (a JWT or a key holds digit runs), e-mail before the digit
# detectors (an address may hold a phone number), IBANs before cards (an account number's digit
# groups can pass Luhn), cards before phones (card groups look like one).
_BUILT_IN_DETECTORS: dict[DetectorName, tuple[_Detector, ...]] = {
    "secret": _SECRET_DETECTORS,
    "email": (_Detector("email", _find_emails, min_length=6, triggers=("@",)),),
    "iban": (_regex_detector("iban", _IBAN, _ibans, min_length=15, shapes=(b"AA00",)),),
    "credit_card": (
        _regex_detector(
            "credit_card",
            _CARD_RUN,
            _card_numbers,
            min_length=13,
            shapes=(b"0" * 13, b"0000s000"),  # one group of 13+, or 4 digits then more groups
        ),
    ),
    "national_id": (
        _regex_detector(
            "national_id",
            _US_SOCIAL_SECURITY_NUMBER,
            min_length=11,
            triggers=("-",),
            shapes=(b"000s00s0000",),
        ),
        _regex_detector(
            "national_id", _UK_NATIONAL_INSURANCE_NUMBER, min_length=9, shapes=(b"AA00", b"AAs00")
        ),
        _regex_detector(
            "national_id",
            _SPANISH_DNI,
            _spanish_dni,
            min_length=9,
            shapes=(b"0000000A", b"0000000sA"),
        ),
        _regex_detector(
            "national_id",
            _FRENCH_NIR,
            _french_nir,
            min_length=15,
            shapes=(b"0" * 13, b"s000s000s00", b"0A000000"),  # compact, printed, Corsica
        ),
    ),
    "phone": (
        _regex_detector(
            "phone",
            _PHONE_INTERNATIONAL,
            _international_phone,
            min_length=10,
            triggers=("+",),
            shapes=(b"+0",),
        ),
        _regex_detector(
            "phone",
            _PHONE_NORTH_AMERICAN,
            min_length=12,
            shapes=(b"000s0000",),  # exchange-line
        ),
        _regex_detector(
            "phone",
            _PHONE_NATIONAL,
            _national_phone,
            min_length=11,
            shapes=(b"00s00", b"00/00", b"0)s00", b"0)00"),  # area code, separator, digits
        ),
    ),
}

_DELETE_DIGITS = str.maketrans("", "", "0123456789")


def _count_digits(text: str) -> int:
    return len(text) - len(text.translate(_DELETE_DIGITS))


def _shape_table() -> bytes:
    table = bytearray(b"x" * 256)
    table[ord("0") : ord("9") + 1] = b"0" * 10
    table[ord("A") : ord("Z") + 1] = b"A" * 26
    for separator in b" .-":
        table[separator] = ord("s")
    table[ord("+")] = ord("+")
    for kept in b"/)":
        table[kept] = kept
    return bytes(table)


_SHAPE_TABLE = _shape_table()


def _shape_of(text: str) -> bytes:
    """The text with digits as 0, capitals as A, space, dot and dash as s, + / and ) kept, the
    rest x.

    The digit detectors need shapes such as "000s0000" (a phone number's last two groups); one
    translate and a few substring searches in C rule them out for most text, where their regexes
    would cost about 15 microseconds each on a 2 KB prompt.
    """
    return text.encode("utf-8", "surrogatepass").translate(_SHAPE_TABLE)


def _outside_json_escapes(text: str, start: int, end: int) -> Span:
    """Shrink [start, end) so that it neither starts nor ends inside a backslash escape.

    In JSON-encoded attributes ``\\nalice@example.com`` must become ``\\n[REDACTED:email]``, not
    ``\\[REDACTED:email]`` (an invalid escape), and a match must not swallow the backslash of
    ``\\"`` (which would end the JSON string early).
    """
    escape = _escape_covering(text, start)
    if escape is not None:
        start = escape[1]
    escape = _escape_covering(text, end)
    if escape is not None:
        end = escape[0]
    return start, end


def _escape_covering(text: str, position: int) -> Span | None:
    """The escape sequence [begin, end) with begin < position < end, if there is one."""
    backslash = text.rfind("\\", max(0, position - 5), position)
    if backslash < 0:
        return None
    run_start = backslash
    while run_start > 0 and text[run_start - 1] == "\\":
        run_start -= 1
    if (backslash - run_start) % 2 == 1:  # this backslash is itself escaped ("\\\\")
        return None
    length = 6 if text.startswith("u", backslash + 1) else 2
    if position < backslash + length:
        return backslash, backslash + length
    return None


# A card number can be a bare JSON number ({"card": 4111111111111111}); replaced by a string it
# keeps the document valid. Only checked for all-digit matches in text that starts like JSON.
_JSON_DOCUMENT_START = re.compile(r"\s*[\[{]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)  # unterminated: to the end
_JSON_NUMBER_AFTER = re.compile(r"(?:\.\d+)?(?:[eE][+-]?\d+)?", re.ASCII)


class _JsonStrings:
    """Where the strings of a JSON document are: found once, then asked about many positions."""

    def __init__(self, text: str) -> None:
        self.is_document = _JSON_DOCUMENT_START.match(text) is not None
        tokens = _JSON_STRING.finditer(text) if self.is_document else iter(())
        self._starts: list[int] = []
        self._ends: list[int] = []
        for token in tokens:
            self._starts.append(token.start())
            self._ends.append(token.end())

    def is_bare_number_at(self, position: int) -> bool:
        """True if the text is a JSON document and ``position`` lies outside its strings."""
        if not self.is_document:
            return False
        index = bisect.bisect_right(self._starts, position) - 1
        return index < 0 or self._ends[index] <= position


def _json_number_bounds(text: str, start: int, end: int) -> Span:
    """The whole number token around the digits [start, end): sign, fraction and exponent."""
    if start > 0 and text[start - 1] == "-":
        start -= 1
    after = _JSON_NUMBER_AFTER.match(text, end)
    return start, after.end() if after is not None else end


class Redactor:
    """Applies a RedactionConfig's detectors to text and, in place, to OTLP requests.

    Patterns are compiled once; the only state is a bounded cache of short values found clean
    (safe to share), so one instance serves every request and thread and has no lifecycle. It
    ignores ``config.enabled``: the collector builds a Redactor only when redaction is enabled.
    """

    def __init__(self, config: RedactionConfig) -> None:
        self.config = config
        self.fingerprint = config.fingerprint()
        detectors: list[_Detector] = []
        for name, built_in in _BUILT_IN_DETECTORS.items():  # this order, whatever the config's
            if name in config.detectors:
                detectors.extend(built_in)
        for custom in config.custom_patterns:
            detectors.append(_regex_detector(custom.name, re.compile(custom.pattern)))
        self._detectors = tuple(detectors)
        self._replacements = {
            detector.kind: config.replacement.format(kind=detector.kind) for detector in detectors
        }
        self._min_length = min((detector.min_length for detector in detectors), default=1)
        self._has_custom_patterns = bool(config.custom_patterns)
        self._skip_keys = frozenset(config.skip_attribute_keys)
        self._clean_texts: set[str] = set()

    def redact_text(self, text: str) -> tuple[str, Counter[str]]:
        """The text with every match replaced, and how many matches of each kind it had."""
        counts: Counter[str] = Counter()
        return self._redact(text, counts), counts

    def redact_request(self, request: ExportTraceServiceRequest) -> Counter[str]:
        """Redacts a trace request in place; returns the number of redactions per kind."""
        counts: Counter[str] = Counter()
        for resource_spans in request.resource_spans:
            self._redact_attributes(resource_spans.resource.attributes, counts, 0)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self._redact_attributes(span.attributes, counts, 0)
                    for event in span.events:
                        self._redact_attributes(event.attributes, counts, 0)
                    for link in span.links:
                        self._redact_attributes(link.attributes, counts, 0)
        return counts

    def redact_logs_request(self, request: ExportLogsServiceRequest) -> Counter[str]:
        """Redacts a logs request (resource attributes, record bodies and attributes) in place."""
        counts: Counter[str] = Counter()
        for resource_logs in request.resource_logs:
            self._redact_attributes(resource_logs.resource.attributes, counts, 0)
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    self._redact_value(record.body, counts, 0)
                    self._redact_attributes(record.attributes, counts, 0)
        return counts

    def _redact_attributes(
        self, attributes: Iterable[KeyValue], counts: Counter[str], depth: int
    ) -> None:
        skip_keys = self._skip_keys
        for attribute in attributes:
            if not skip_keys or attribute.key not in skip_keys:
                self._redact_value(attribute.value, counts, depth)

    def _redact_value(self, value: AnyValue, counts: Counter[str], depth: int) -> None:
        """``depth`` is the number of arrays and key-value lists around ``value``."""
        # Reading string_value first (empty for every other kind) halves the protobuf calls
        # for the common case, a string attribute.
        text = value.string_value
        if text:
            redacted = self._redact(text, counts)
            if redacted is not text:
                value.string_value = redacted
            return
        kind = value.WhichOneof("value")
        if kind == "array_value":
            items = value.array_value.values
            if depth < MAX_NESTING_DEPTH:
                for item in items:
                    self._redact_value(item, counts, depth + 1)
            elif items:
                counts[DEPTH_LIMIT_KIND] += 1
        elif kind == "kvlist_value":
            attributes = value.kvlist_value.values
            if depth < MAX_NESTING_DEPTH:
                self._redact_attributes(attributes, counts, depth + 1)
            elif attributes:
                counts[DEPTH_LIMIT_KIND] += 1

    def _redact(self, text: str, counts: Counter[str]) -> str:
        """The redacted text; the very same object when nothing matched."""
        if len(text) < self._min_length or text in self._clean_texts:
            return text
        original = text
        for _ in range(_MAX_ROUNDS):
            redacted = self._redact_once(text, counts)
            if redacted is None:
                break
            text, settled = redacted
            if settled and not self._has_custom_patterns:
                break
        if text is original and len(text) <= _CLEAN_CACHE_MAX_LENGTH:
            if len(self._clean_texts) >= _CLEAN_CACHE_MAX_ENTRIES:
                self._clean_texts.clear()  # cheaper than LRU bookkeeping; values recur quickly
            self._clean_texts.add(text)
        return text

    def _redact_once(self, text: str, counts: Counter[str]) -> tuple[str, bool] | None:
        """One pass of every detector: the new text and whether it is settled (see _apply).

        None when nothing matched.
        """
        shape: bytes | None = None  # computed when a detector first needs it
        has_backslash = "\\" in text
        changed = False
        settled = True
        for detector in self._detectors:
            if len(text) < detector.min_length:
                continue
            if detector.triggers:
                for trigger in detector.triggers:
                    if trigger in text:
                        break
                else:
                    continue
            if detector.shapes:
                if shape is None:
                    shape = _shape_of(text)
                for wanted in detector.shapes:
                    if wanted in shape:
                        break
                else:
                    continue
            if detector.precheck is not None and detector.precheck.search(text) is None:
                continue
            redacted = self._apply(detector, text, counts, has_backslash)
            if redacted is not None:
                text, applied_settled = redacted
                settled = settled and applied_settled
                changed = True
                shape = None
        return (text, settled) if changed else None

    def _apply(
        self, detector: _Detector, text: str, counts: Counter[str], has_backslash: bool
    ) -> tuple[str, bool] | None:
        """The text with ``detector``'s matches replaced, and whether all of them sat between
        _SETTLED_NEIGHBOURS; None when nothing matched."""
        replacement = self._replacements[detector.kind]
        pieces: list[str] = []
        position = 0
        replaced = 0
        settled = True
        json_strings: _JsonStrings | None = None
        for start, end in detector.find(text):
            if has_backslash:
                start, end = _outside_json_escapes(text, start, end)
            if start >= end or start < position:
                continue
            bare_number = False
            if text[start:end].isdigit():
                if json_strings is None:
                    json_strings = _JsonStrings(text)
                bare_number = json_strings.is_bare_number_at(start)
            if bare_number:
                start, end = _json_number_bounds(text, start, end)
                pieces += (text[position:start], '"', replacement, '"')
            else:
                pieces += (text[position:start], replacement)
            settled = (
                settled
                and (start == 0 or text[start - 1] in _SETTLED_NEIGHBOURS)
                and (end == len(text) or text[end] in _SETTLED_NEIGHBOURS)
            )
            position = end
            replaced += 1
        if not replaced:
            return None
        pieces.append(text[position:])
        counts[detector.kind] += replaced
        return "".join(pieces), settled
