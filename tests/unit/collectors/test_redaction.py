"""Unit tests for PII redaction at the collector edge: detectors, config checks, request walks."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import ValidationError

from llmtap.collectors.redaction import (
    DEPTH_LIMIT_KIND,
    MAX_NESTING_DEPTH,
    CustomPattern,
    RedactionConfig,
    Redactor,
    luhn_valid,
)

REDACTOR = Redactor(RedactionConfig(enabled=True))

EMAIL = "jane.doe+billing@example.co.uk"
CARD = "4111 1111 1111 1111"  # Visa test number, Luhn-valid
OPENAI_KEY = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."
    "eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def redacted(text: str, redactor: Redactor = REDACTOR) -> str:
    return redactor.redact_text(text)[0]


def string_attribute(key: str, text: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=text))


# --- Detectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [EMAIL, "bob@example.com", "first_last@sub.domain.io", "x%y@host-name.example.org"],
)
def test_email_addresses_are_redacted(address: str) -> None:
    text, counts = REDACTOR.redact_text(f"write to <{address}>, please")
    assert text == "write to <[REDACTED:email]>, please"
    assert counts == Counter(email=1)


@pytest.mark.parametrize(
    "text",
    ["user@localhost", "@handle on social", "a @ b.com", "price: 5@3.0", "meet@noon.x"],
)
def test_email_detector_ignores_things_that_are_not_addresses(text: str) -> None:
    assert redacted(text) == text


@pytest.mark.parametrize(
    "number",
    [
        "+1 (415) 555-2671",
        "+44 20 7946 0958",
        "+14155552671",
        "+33 1 23 45 67 89",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "1 415 555 2671",
    ],
)
def test_phone_numbers_are_redacted(number: str) -> None:
    text, counts = REDACTOR.redact_text(f"call {number} today")
    assert text == "call [REDACTED:phone] today"
    assert counts == Counter(phone=1)


@pytest.mark.parametrize(
    "text",
    [
        "timestamp 1700000000000 in ms",
        "order id 4155552671",
        "version 10.2.33 released 2024-01-15",
        "short +12345 code",
        "duration 12:30:45, 3.14159",
        "x+415 555 2671",  # glued to a word: an expression, not a number
    ],
)
def test_phone_detector_ignores_timestamps_ids_and_versions(text: str) -> None:
    assert redacted(text) == text


@pytest.mark.parametrize(
    "number",
    [
        CARD,
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",  # Mastercard
        "3782 822463 10005",  # American Express, 4-6-5
        "6011 0009 9013 9424",  # Discover
    ],
)
def test_luhn_valid_card_numbers_are_redacted(number: str) -> None:
    text, counts = REDACTOR.redact_text(f"card: {number}.")
    assert text == "card: [REDACTED:credit_card]."
    assert counts == Counter(credit_card=1)


def test_card_number_next_to_other_numbers_is_found() -> None:
    assert redacted(f"{CARD} 12 25") == "[REDACTED:credit_card] 12 25"
    assert redacted(f"ref 12 {CARD}") == "ref 12 [REDACTED:credit_card]"
    assert redacted(f"{CARD} {CARD}") == "[REDACTED:credit_card] [REDACTED:credit_card]"


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn-invalid
        "4111111111111112",
        "1700000000000",  # millisecond timestamp
        "1700000000000000000",  # nanosecond timestamp
        "12345678901234567890",  # 20-digit id
        "1 2 3 4 5 6 7 8 9 10 11 12 13 14",
        "7992739871300",  # Luhn-valid, but no card network starts with 7
    ],
)
def test_card_detector_ignores_numbers_that_are_not_cards(text: str) -> None:
    assert redacted(text) == text


def test_luhn_check() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")


@pytest.mark.parametrize("number", ["123-45-6789", "AB123456C", "AB 12 34 56 C", "JG103759A"])
def test_national_ids_are_redacted(number: str) -> None:
    text, counts = REDACTOR.redact_text(f"id {number} on file")
    assert text == "id [REDACTED:national_id] on file"
    assert counts == Counter(national_id=1)


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",  # area never issued
        "666-12-3456",
        "912-34-5678",
        "123-00-6789",  # group never issued
        "123-45-0000",  # serial never issued
        "123456789",  # bare digits: too often something else
        "QQ123456C",  # prefix never allocated (Q)
        "GB123456A",
        "AB123456E",  # suffix is A-D
        "ZAB123456C",
    ],
)
def test_national_id_detector_ignores_invalid_numbers(text: str) -> None:
    assert redacted(text) == text


@pytest.mark.parametrize(
    "secret",
    [
        OPENAI_KEY,
        "sk-ant-api03-Zx9yW8vU7tS6rQ5pO4nM3lK2jI1hG0fE",
        "sk-" + "a1B2c3D4e5" * 4 + "f6G7h8",
        "AKIAIOSFODNN7EXAMPLE",
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hI6",
        "gho_" + "Z" * 18 + "1" * 18,
        "ghs_" + "x9" * 18,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
        "xoxp-2222222222-3333333333-abcdef",
        "AIzaSyD-1aB2cD3eF4gH5iJ6kL7mN8oP9qR0sTu",
        JWT,
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq\nQ29k+ZXhhbXBsZQ==\n"
        "-----END RSA PRIVATE KEY-----",
    ],
)
def test_secrets_are_redacted(secret: str) -> None:
    text, counts = REDACTOR.redact_text(f"config: {secret} end")
    assert text == "config: [REDACTED:secret] end"
    assert counts == Counter(secret=1)


def test_truncated_private_key_is_redacted_to_the_end_of_its_body() -> None:
    text = "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\nAASC"
    assert redacted(text) == "key: [REDACTED:secret]"
    assert redacted(text + "... (truncated)") == "key: [REDACTED:secret]... (truncated)"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_credentials_keep_the_scheme(scheme: str) -> None:
    header = f"Authorization: {scheme} 9f8e7d6c5b4a3f2e1d0c9b8a.x-y_z"
    assert redacted(header) == f"Authorization: {scheme} [REDACTED:secret]"


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog; ordinary words stay.",
        "request 550e8400-e29b-41d4-a716-446655440000",  # UUID
        "trace 4bf92f3577b34da6a3ce929d0e0e4736 span 00f067aa0ba902b7",
        "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "see /sk-learn-tutorial-for-beginners-and-experts",  # slug: no digit
        "ask-questions-about-2024-at-the-desk-meeting",
        "the Bearer of bad news arrived",
        "AKIA is a prefix; AKIASHORT is not a key",
        "eyJ alone is not a token",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
        "some_snake_case_identifier_that_is_quite_long_indeed",
    ],
)
def test_secret_detector_ignores_ordinary_text_and_ids(text: str) -> None:
    assert redacted(text) == text


def test_counts_every_match_by_kind() -> None:
    text = f"{EMAIL} or bob@example.com, card {CARD}, key {OPENAI_KEY}, tel +44 20 7946 0958"
    result, counts = REDACTOR.redact_text(text)
    assert counts == Counter(email=2, credit_card=1, secret=1, phone=1)
    assert result == (
        "[REDACTED:email] or [REDACTED:email], card [REDACTED:credit_card], "
        "key [REDACTED:secret], tel [REDACTED:phone]"
    )


def test_clean_text_is_returned_as_is() -> None:
    text = "a perfectly ordinary sentence with nothing to hide"
    result, counts = REDACTOR.redact_text(text)
    assert result is text
    assert counts == Counter()


def test_repeated_text_is_redacted_every_time() -> None:
    for _ in range(3):
        assert redacted(f"mail {EMAIL}") == "mail [REDACTED:email]"


def test_token_glued_to_a_card_number_is_redacted_too() -> None:
    # The key's own boundary check fails next to a digit; once the card is gone it holds.
    text, counts = REDACTOR.redact_text(f"4111111111111111{OPENAI_KEY}")
    assert text == "[REDACTED:credit_card][REDACTED:secret]"
    assert counts == Counter(credit_card=1, secret=1)


def test_matches_glued_to_each_other_are_all_redacted_in_one_call() -> None:
    # Each number's last digit would make the next one's boundary check fail.
    text, counts = REDACTOR.redact_text("+441632960960+441632960961+441632960962")
    assert text == "[REDACTED:phone]" * 3
    assert counts == Counter(phone=3)
    assert redacted("a@example.com.b@example.com") == "[REDACTED:email][REDACTED:email]"


def test_only_the_configured_detectors_run() -> None:
    redactor = Redactor(RedactionConfig(enabled=True, detectors=["email"]))
    text = f"{EMAIL} {CARD} +44 20 7946 0958 {OPENAI_KEY} 123-45-6789"
    assert (
        redacted(text, redactor)
        == f"[REDACTED:email] {CARD} +44 20 7946 0958 {OPENAI_KEY} 123-45-6789"
    )


def test_custom_pattern_is_redacted_under_its_name() -> None:
    config = RedactionConfig(
        enabled=True,
        custom_patterns=[CustomPattern(name="employee_id", pattern=r"\bEMP-\d{6}\b")],
        replacement="<{kind}>",
    )
    text, counts = Redactor(config).redact_text(f"EMP-004211 wrote from {EMAIL}")
    assert text == "<employee_id> wrote from <email>"
    assert counts == Counter(employee_id=1, email=1)


def test_custom_patterns_can_be_given_as_plain_mappings() -> None:
    config = RedactionConfig.model_validate(
        {"enabled": True, "custom_patterns": [{"name": "ticket", "pattern": r"TCK\d+"}]}
    )
    assert redacted("see TCK123", Redactor(config)) == "see [REDACTED:ticket]"


# --- Configuration -----------------------------------------------------------------------------


def test_defaults_are_off_with_every_detector() -> None:
    config = RedactionConfig()
    assert config.enabled is False
    assert config.detectors == ["email", "phone", "credit_card", "iban", "national_id", "secret"]
    assert config.replacement == "[REDACTED:{kind}]"
    assert config.custom_patterns == []
    assert config.skip_attribute_keys == []


def test_every_field_has_a_description() -> None:
    for model in (RedactionConfig, CustomPattern):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_unknown_fields_and_detectors_are_rejected() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RedactionConfig.model_validate({"enable": True})
    with pytest.raises(ValidationError, match="detectors"):
        RedactionConfig.model_validate({"detectors": ["email", "passport"]})


@pytest.mark.parametrize(
    ("replacement", "message"),
    [
        ("[{name}]", r"has the placeholder \{name\}; only \{kind\} is allowed"),
        ("[{kind!r}]", r"has the placeholder \{kind!r\}; only \{kind\} is allowed"),
        ("[{kind:>12}]", r"has the placeholder \{kind:>12\}; only \{kind\} is allowed"),
        ("[{0}]", r"has the placeholder \{0\}"),
        ("[{}]", r"has the placeholder \{\}"),
        ("[{kind]", "is not a valid format string"),
        ("oops }", "is not a valid format string"),
        ('"{kind}"', "holds a quote, backslash or control character"),
        ("\\{kind}", "holds a quote, backslash or control character"),
        ("{kind}\n", "holds a quote, backslash or control character"),
    ],
)
def test_invalid_replacements_are_rejected(replacement: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RedactionConfig(replacement=replacement)


@pytest.mark.parametrize("replacement", ["***", "<{kind}>", "{{{kind}}}", "", "[removed]"])
def test_valid_replacements_are_accepted(replacement: str) -> None:
    assert RedactionConfig(replacement=replacement).replacement == replacement


def test_literal_braces_in_the_replacement_are_kept() -> None:
    redactor = Redactor(RedactionConfig(replacement="{{{kind}}}"))
    assert redacted(f"to {EMAIL}", redactor) == "to {email}"


def test_invalid_regular_expression_reports_the_error() -> None:
    with pytest.raises(ValidationError) as caught:
        CustomPattern(name="broken", pattern="(EMP-[0-9")
    message = str(caught.value)
    assert "pattern" in message  # the field, so the user finds it in the config
    assert "'(EMP-[0-9' is not a valid regular expression: unterminated character set" in message
    assert "at position 5" in message


@pytest.mark.parametrize("pattern", ["a*", "x?", "", r"\b", "(?=EMP)", "(?:abc)?", "^"])
def test_patterns_that_can_match_the_empty_string_are_rejected(pattern: str) -> None:
    with pytest.raises(ValidationError, match="can match the empty string"):
        CustomPattern(name="empty", pattern=pattern)


@pytest.mark.parametrize("name", ["1st", "with-dash", "has space", "", DEPTH_LIMIT_KIND])
def test_custom_pattern_names_must_be_identifiers(name: str) -> None:
    with pytest.raises(ValidationError, match="name"):
        CustomPattern(name=name, pattern="x")


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as caught:
        RedactionConfig.model_validate(
            {
                "replacement": "{user}",
                "custom_patterns": [{"name": "a", "pattern": "("}, {"name": "b", "pattern": "b*"}],
            }
        )
    assert caught.value.error_count() == 3


def test_config_is_frozen() -> None:
    config = RedactionConfig()
    with pytest.raises(ValidationError):
        config.enabled = True  # type: ignore[misc]


# --- JSON-encoded attributes -------------------------------------------------------------------


def test_redaction_inside_json_keeps_it_valid_json() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant.\n"},
        {
            "role": "user",
            "content": (
                f'Contact:\n{EMAIL}\t"{OPENAI_KEY}"\n'
                f"card {CARD}\\n (a literal backslash-n), tel +44 20 7946 0958, "
                "Éric: éric@exämple.com / eric@example.com"
            ),
        },
        {"role": "assistant", "content": [{"type": "text", "text": f"Sent to {EMAIL}."}]},
    ]
    for ensure_ascii in (True, False):
        encoded = json.dumps(messages, ensure_ascii=ensure_ascii)
        result, counts = REDACTOR.redact_text(encoded)
        decoded = json.loads(result)
        assert counts == Counter(email=3, secret=1, credit_card=1, phone=1)
        content = decoded[1]["content"]
        assert content.startswith('Contact:\n[REDACTED:email]\t"[REDACTED:secret]"\n')
        assert "card [REDACTED:credit_card]\\n (a literal backslash-n)" in content
        assert EMAIL not in result
        assert decoded[2]["content"][0]["text"] == "Sent to [REDACTED:email]."


def test_card_numbers_as_bare_json_numbers_become_strings() -> None:
    document = {"card": 4111111111111111, "cards": [-5500000000000004, 6011000990139424.0]}
    result, counts = REDACTOR.redact_text(json.dumps(document))
    assert counts == Counter(credit_card=3)
    assert json.loads(result) == {
        "card": "[REDACTED:credit_card]",
        "cards": ["[REDACTED:credit_card]", "[REDACTED:credit_card]"],
    }
    # Inside a string, or in text that is not a JSON document, no quotes are added.
    assert redacted('["paid with 4111111111111111"]') == '["paid with [REDACTED:credit_card]"]'
    assert redacted("card: 4111111111111111") == "card: [REDACTED:credit_card]"


def test_a_match_never_splits_a_json_unicode_escape() -> None:
    # ensure_ascii writes "é" as \u00e9; the address after it must not take the escape's digits.
    encoded = json.dumps({"to": "\u00e9ric@example.com"})
    assert encoded == '{"to": "\\u00e9ric@example.com"}'
    result = redacted(encoded)
    assert result == '{"to": "\\u00e9[REDACTED:email]"}'
    assert json.loads(result) == {"to": "é[REDACTED:email]"}


def test_a_match_never_swallows_the_backslash_of_an_escaped_quote() -> None:
    truncated_key = "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\"
    encoded = '{"k": "' + truncated_key + '"}'
    result = redacted(encoded)
    assert result == '{"k": "[REDACTED:secret]\\"}'


# --- Request walks -----------------------------------------------------------------------------


def trace_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(string_attribute("host.owner", EMAIL))
    resource_spans.resource.attributes.append(string_attribute("service.name", "chat-api"))
    span = resource_spans.scope_spans.add().spans.add(name=f"chat {EMAIL}")
    span.attributes.append(string_attribute("gen_ai.request.model", "gpt-4o-mini"))
    span.attributes.append(string_attribute("gen_ai.prompt", f"my card is {CARD}"))
    span.attributes.append(KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=42)))
    span.attributes.append(KeyValue(key="flag", value=AnyValue(bool_value=True)))
    span.attributes.append(KeyValue(key="raw", value=AnyValue(bytes_value=EMAIL.encode())))
    span.attributes.append(string_attribute("enduser.id", EMAIL))
    event = span.events.add(name="gen_ai.user.message")
    event.attributes.append(string_attribute("content", f"reach me on +44 20 7946 0958 {EMAIL}"))
    link = span.links.add(trace_id=b"\x01" * 16, span_id=b"\x02" * 8)
    link.attributes.append(string_attribute("note", f"token {OPENAI_KEY}"))
    return request


def test_trace_request_is_redacted_in_place_everywhere() -> None:
    request = trace_request()
    counts = REDACTOR.redact_request(request)
    assert counts == Counter(email=3, credit_card=1, phone=1, secret=1)
    resource_spans = request.resource_spans[0]
    assert resource_spans.resource.attributes[0].value.string_value == "[REDACTED:email]"
    assert resource_spans.resource.attributes[1].value.string_value == "chat-api"
    span = resource_spans.scope_spans[0].spans[0]
    values = {attribute.key: attribute.value for attribute in span.attributes}
    assert values["gen_ai.request.model"].string_value == "gpt-4o-mini"
    assert values["gen_ai.prompt"].string_value == "my card is [REDACTED:credit_card]"
    assert values["gen_ai.usage.input_tokens"].int_value == 42
    assert values["flag"].bool_value is True
    assert values["raw"].bytes_value == EMAIL.encode()  # bytes are not inspected
    assert values["enduser.id"].string_value == "[REDACTED:email]"
    assert span.name == f"chat {EMAIL}"  # names are not covered
    assert (
        span.events[0].attributes[0].value.string_value
        == "reach me on [REDACTED:phone] [REDACTED:email]"
    )
    assert span.links[0].attributes[0].value.string_value == "token [REDACTED:secret]"


def test_skip_attribute_keys_are_left_alone() -> None:
    redactor = Redactor(RedactionConfig(enabled=True, skip_attribute_keys=["enduser.id"]))
    request = trace_request()
    nested = KeyValueList(
        values=[string_attribute("enduser.id", EMAIL), string_attribute("other", EMAIL)]
    )
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.append(KeyValue(key="user", value=AnyValue(kvlist_value=nested)))
    counts = redactor.redact_request(request)
    assert counts["email"] == 3  # resource owner, event content, nested "other"
    values = {attribute.key: attribute.value for attribute in span.attributes}
    assert values["enduser.id"].string_value == EMAIL
    nested_values = values["user"].kvlist_value.values
    assert nested_values[0].value.string_value == EMAIL
    assert nested_values[1].value.string_value == "[REDACTED:email]"


def test_strings_in_nested_arrays_and_key_value_lists_are_redacted() -> None:
    inner = KeyValueList(
        values=[
            string_attribute("email", EMAIL),
            KeyValue(
                key="numbers",
                value=AnyValue(
                    array_value=ArrayValue(
                        values=[AnyValue(string_value=CARD), AnyValue(int_value=7)]
                    )
                ),
            ),
        ]
    )
    value = AnyValue(
        array_value=ArrayValue(
            values=[AnyValue(string_value=f"to {EMAIL}"), AnyValue(kvlist_value=inner)]
        )
    )
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.attributes.append(KeyValue(key="gen_ai.tool.arguments", value=value))
    counts = REDACTOR.redact_request(request)
    assert counts == Counter(email=2, credit_card=1)
    walked = span.attributes[0].value.array_value.values
    assert walked[0].string_value == "to [REDACTED:email]"
    kvlist = walked[1].kvlist_value.values
    assert kvlist[0].value.string_value == "[REDACTED:email]"
    assert kvlist[1].value.array_value.values[0].string_value == "[REDACTED:credit_card]"
    assert kvlist[1].value.array_value.values[1].int_value == 7


def add_nested(span: Span, key: str, levels: int, leaf: str) -> None:
    """An attribute whose string value sits inside ``levels`` arrays and key-value lists."""
    value = span.attributes.add(key=key).value
    for level in range(levels):
        # Built in place: copying a message this deep would exceed protobuf's own depth limit.
        if level % 3 == 2:
            value = value.kvlist_value.values.add(key="nested").value
        else:
            value = value.array_value.values.add()
    value.string_value = leaf


def innermost(value: AnyValue) -> AnyValue:
    while value.WhichOneof("value") != "string_value":
        if value.HasField("array_value"):
            value = value.array_value.values[0]
        else:
            value = value.kvlist_value.values[0].value
    return value


def test_values_nested_deeper_than_the_limit_are_left_alone_and_counted() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    add_nested(span, "at_limit", MAX_NESTING_DEPTH, EMAIL)
    add_nested(span, "too_deep", MAX_NESTING_DEPTH + 1, EMAIL)
    add_nested(span, "far_too_deep", 40, EMAIL)
    counts = REDACTOR.redact_request(request)
    assert counts == Counter({"email": 1, DEPTH_LIMIT_KIND: 2})
    assert innermost(span.attributes[0].value).string_value == "[REDACTED:email]"
    assert innermost(span.attributes[1].value).string_value == EMAIL
    assert innermost(span.attributes[2].value).string_value == EMAIL


def test_logs_request_bodies_and_attributes_are_redacted() -> None:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.append(string_attribute("host.owner", EMAIL))
    records = resource_logs.scope_logs.add().log_records
    records.add(body=AnyValue(string_value=f"login from {EMAIL}")).attributes.append(
        string_attribute("card", CARD)
    )
    structured = KeyValueList(values=[string_attribute("key", OPENAI_KEY)])
    records.add(body=AnyValue(kvlist_value=structured))
    records.add()  # no body at all
    counts = REDACTOR.redact_logs_request(request)
    assert counts == Counter(email=2, credit_card=1, secret=1)
    assert resource_logs.resource.attributes[0].value.string_value == "[REDACTED:email]"
    first, second, third = resource_logs.scope_logs[0].log_records
    assert first.body.string_value == "login from [REDACTED:email]"
    assert first.attributes[0].value.string_value == "[REDACTED:credit_card]"
    assert second.body.kvlist_value.values[0].value.string_value == "[REDACTED:secret]"
    assert not third.HasField("body")


def test_request_without_pii_is_unchanged() -> None:
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(name="chat")
    span.attributes.append(string_attribute("gen_ai.system", "openai"))
    before = request.SerializeToString()
    assert REDACTOR.redact_request(request) == Counter()
    assert request.SerializeToString() == before


# --- Properties ----------------------------------------------------------------------------------

FRAGMENTS = [
    EMAIL,
    CARD,
    OPENAI_KEY,
    JWT,
    "+44 20 7946 0958",
    "(415) 555-2671",
    "123-45-6789",
    "AB123456C",
    "Bearer ",
    "@",
    "-",
    " ",
    ".",
    "\\",
    '"',
    "\\u00e9",
    "0",
    "4111",
    "1234",
    "x",
    "_",
]
pii_like_text = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=4)), max_size=12
).map("".join)


@given(st.one_of(st.text(), pii_like_text))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_redaction_never_raises_and_is_idempotent(text: str) -> None:
    once, _ = REDACTOR.redact_text(text)
    twice, counts = REDACTOR.redact_text(once)
    assert twice == once
    assert counts == Counter()


@st.composite
def luhn_valid_cards(draw: st.DrawFn) -> str:
    """A 16-digit card number in the canonical "dddd dddd dddd dddd" form."""
    body = str(draw(st.integers(2, 6))) + "".join(
        str(digit) for digit in draw(st.lists(st.integers(0, 9), min_size=14, max_size=14))
    )
    check = next(str(digit) for digit in range(10) if luhn_valid(body + str(digit)))
    number = body + check
    return " ".join(number[index : index + 4] for index in range(0, 16, 4))


@given(st.text(), luhn_valid_cards(), st.text())
@settings(max_examples=300)
def test_a_card_number_in_text_never_survives(prefix: str, card: str, suffix: str) -> None:
    # A card glued to more digits ("54111 1111 ...") is a different number, not this card.
    assume(not re.search(r"\d\Z", prefix, re.ASCII) and not re.match(r"\d", suffix, re.ASCII))
    result, _ = REDACTOR.redact_text(prefix + card + suffix)
    assert card not in result
