"""Builds ``labeled.jsonl``: the labeled set that PII redaction is evaluated on.

Why a generator: a few hundred cases written out by hand drift (a card whose check digit is
wrong by accident would be a look-alike labeled as PII). Here the values are hand-picked formats
whose checksums are computed (Luhn for cards, mod-97 for IBANs and French NIRs, the letter of
Spanish DNIs), placed in hand-written prompt, log and JSON templates. The output is committed;
regenerate after an edit and review the diff:

    .venv/bin/python tests/data/pii/generate.py

Each line: ``{"id", "text", "pii": [{"kind", "start", "end", "value"}], "lookalike"}``. ``pii``
lists every span that must be redacted (``text[start:end] == value``); ``lookalike`` names what
a case without PII imitates (empty for positives). Everything else in a text must survive.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "labeled.jsonl"
SEED = 20261121

# --- Templates: where a value appears -------------------------------------------------------------

PROSE = [
    "Hi, please contact me at {v} about my order.",
    "My details: {v}. Can you check why the payment failed?",
    "User: here it is -> {v} <- use that one",
    'The customer wrote "{v}" in the form, is that valid?',
    "Summarize this ticket: customer ({v}) reports a double charge.",
    "{v}",
    "{v} is what they gave me",
    "ok so {v}, thanks!",
    "Assistant: I have noted {v} for the follow-up.",
    "Line 3 of the CSV: 1042,Jane,{v},active",
]
JSON = [
    '{{"role": "user", "content": "Please use {v} for this"}}',
    '[{{"role":"system","content":"Be brief."}},{{"role":"user","content":"{v}"}}]',
    '{{"messages": [{{"role": "user", "content": "note:\\n{v}\\nthanks"}}]}}',
    '{{"tool": "crm.update", "arguments": {{"field": "contact", "value": "{v}"}}}}',
]
LOG = [
    "2024-05-01T12:00:00Z INFO request from {v} processed in 120ms",
    "level=warn msg=\"retrying\" detail='{v}' attempt=2",
]
ALL_TEMPLATES = PROSE + JSON + LOG

# --- Positive values ------------------------------------------------------------------------------

EMAILS = [
    "jane.doe@example.com",
    "j.smith+newsletter@mail.example.co.uk",
    "support@sub.domain.example.org",
    "first_last@company.io",
    "UPPER.Case@Example.COM",
    "user123@gmail.com",
    "a@b.co",
    "x-y_z@my-host.example.de",
    "billing%dept@corp.example.net",
    "o.mueller+invoices@firma-beispiel.de",
    "42@numbers.example",
    "marie.dupont@orange.fr",
]

PHONES = [
    # North America
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "415 555 2671",
    "+1 415 555 2671",
    "+1-415-555-2671",
    "+1 (415) 555-2671",
    "1-800-555-0199",
    "+14155552671",
    # United Kingdom
    "+44 20 7946 0958",
    "+44 7700 900123",
    "+44 (0)20 7946 0958",
    "+447700900123",
    "020 7946 0958",
    "07700 900123",
    "0161 496 0000",
    # Germany
    "+49 30 12345678",
    "+49 (0)89 1234567",
    "+49-171-1234567",
    "030 12345678",
    "0171 1234567",
    "030/1234567",
    "089-12345678",
    # France
    "+33 1 23 45 67 89",
    "+33 6 12 34 56 78",
    "+33.6.12.34.56.78",
    "01 23 45 67 89",
    "06 12 34 56 78",
    "06.12.34.56.78",
    # Netherlands, Spain, elsewhere
    "+31 20 123 4567",
    "020 123 4567",
    "+34 912 345 678",
    "+91 98765 43210",
    "+86 138 0013 8000",
    "+61 2 9876 5432",
    "0049 30 12345678",
]

NATIONAL_IDS = [
    "123-45-6789",  # US SSN
    "078-05-1120",
    "536-22-1234",
    "AB123456C",  # UK National Insurance number
    "AB 12 34 56 C",
    "JG103759A",
    "PW 45 67 89 B",
]

SECRET_TEMPLATES = [
    "sk-{alnum48}",
    "sk-proj-{urlsafe74}",
    "sk-ant-api03-{urlsafe93}AA",
    "ghp_{alnum36}",
    "github_pat_11{upper_digits20}_{alnum59}",
    "gho_{alnum36}",
    "AKIA{upper_digits16}",
    "ASIA{upper_digits16}",
    "xoxb-{digits12}-{digits13}-{alnum24}",
    "xoxp-{digits12}-{digits12}-{digits13}-{hex32}",
    "AIza{urlsafe35}",
    "sk_live_{alnum24}",
    "rk_live_{alnum24}",
    "sk_test_{alnum24}",
    "hf_{letters34}",
]

# --- Negative values: look-alikes that must survive -----------------------------------------------

LOOKALIKES: list[tuple[str, str]] = [
    # (what it imitates, text)
    ("order number", "order #4155552671 shipped"),
    ("order number", "Order ID: ORD-2024-000123456"),
    ("invoice number", "invoice INV-0001-2024-77 is overdue"),
    ("version", "upgraded from 10.2.33 to 10.3.0"),
    ("version", "python 3.11.4, numpy 1.26.4, torch 2.1.0+cu121"),
    ("version", "build 2024.05.01.1234 deployed"),
    ("timestamp", "timestamp 1700000000000 in ms"),
    ("timestamp", "startTimeUnixNano 1715443200123456789"),
    ("timestamp", "at 2024-05-01T12:34:56.789Z the job finished"),
    ("timestamp", "2024-05-01 12:34:56,789 INFO done"),
    ("date", "dated 01.02.2024, due 15/03/2024"),
    ("date", "between 2023-01-15 and 2024-12-31"),
    ("date", "meeting 01/02/2024 10:30"),
    ("duration", "took 12:30:45 and 3.14159 seconds"),
    ("uuid", "request id 123e4567-e89b-12d3-a456-426614174000"),
    ("uuid", "trace 5b8aa5a2-d2c1-4b8e-9c35-3f8e1c2a7d10 failed"),
    ("git sha", "commit 3f786850e387550fdab836ed7e6dc881de23001b"),
    ("git sha", "fixed in a94a8fe5ccb19ba61c4c0873d391e987982fbbd3 (short a94a8fe)"),
    ("hex id", "span_id=00f067aa0ba902b7 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"),
    ("short number", "+12345 is a short code"),
    ("short number", "room 101, floor 3, ext. 4471"),
    ("ip address", "client 192.168.100.200 connected to 10.0.0.1:8080"),
    ("ip address", "ipv6 2001:db8:85a3::8a2e:370:7334"),
    ("arithmetic", "compute 415+555-2671 and 12 - 34 - 56"),
    ("price", "total 1 299.00 EUR (incl. 19% VAT 207.42)"),
    ("coordinates", "lat 51.5074, lon -0.1278"),
    ("isbn", "ISBN 978-3-16-148410-0"),
    ("zip code", "Berlin 10115, Paris 75008, NYC 10001-1234"),
    ("counts", "tokens: 1024 prompt, 512 completion, 1536 total"),
    ("counts", '{"max_tokens": 4096, "temperature": 0.7, "top_p": 0.95}'),
    ("phone-like date", "report 2024-05-01-2024-06-30"),
    ("phone-like date", "window 20240501 to 20240630"),
    ("phone-like number", "the values were 0.25 0.50 0.75 1.00"),
    ("phone-like number", "matrix 0 1 2 3 4 5 6 7 8 9"),
    ("ssn-like", "part number 000-12-3456 and 666-12-3456"),
    ("ssn-like", "range 900-12-3456"),
    ("ssn-like", "ticket 123-45-67890"),
    ("nino-like", "code AB1234 and model GB123456A"),
    ("email-like", "user@localhost"),
    ("email-like", "follow @handle on social"),
    ("email-like", "a @ b.com and 5@3.0"),
    ("email-like", "git@github"),
    ("secret-like", "pip install sk-learn-tutorial-for-beginners"),
    ("secret-like", "see task-1234567890abcdefghij"),
    ("secret-like", "ghp_short and AKIAFAKE"),
    ("secret-like", "the bearer of this letter is trusted"),
    ("secret-like", "api_key: ${OPENAI_API_KEY}"),
    ("secret-like", "set api_key=YOUR_API_KEY_HERE in the env"),
    ("secret-like", "eyJ is how base64 JSON starts"),
    ("secret-like", "xoxo from the team"),
    ("secret-like", "model: claude-3-5-sonnet-20241022"),
    ("secret-like", "model gpt-4o-mini-2024-07-18"),
    ("secret-like", "hf_transfer enabled, hf_hub_download() called"),
    ("card-like", "ms epoch 1715443200123 and 1715443200124"),
    ("card-like", "tracking 9400 1000 0000 0000 0000 00"),
    ("iban-like", "error code DE-4021 and SKU GB12-AB"),
    ("iban-like", "route NL20 to FR75 then ES91"),
    ("iban-like", "part AB12CDEF3456 ships"),
    ("iban-like", "ISO codes DE12, GB 2024 and FR 75 001"),
    ("phone-like number", "call at 09.30 or 10.15, ids 0123 4567"),
    ("phone-like number", "file_0012_3456.png and ratio 01:23:45:67:89"),
    ("phone-like number", "postcode 01234-5678, batch 03/2024-05"),
    ("phone-like number", "order 0123-456-7890 was split"),
    ("dni-like", "model 20481024X and SKU 87654321B"),
    ("dni-like", "serial X1234567A"),
    ("nir-like", "ref 1 85 05 78 006 084 99"),
    ("secret-like", "password: forgotten, reset link sent"),
    ("secret-like", '{"usage": {"token": 1024}, "secret": "none"}'),
    ("secret-like", "the API key is in the vault, api_key_id: 12"),
    ("secret-like", "refresh token expired at 2024-05-01T12:00:00Z"),
    ("secret-like", "Secret Santa: 2024 edition"),
]

# --- Checksums ------------------------------------------------------------------------------------

_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_check_digit(body: str) -> str:
    """The digit that makes ``body`` + digit Luhn-valid."""
    total = sum(_DOUBLED[int(d)] for d in body[::-2]) + sum(int(d) for d in body[-2::-2])
    return str((10 - total % 10) % 10)


def iban_check_digits(country: str, bban: str) -> str:
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - number % 97:02d}"


# --- Generated values -----------------------------------------------------------------------------

CARD_PREFIXES = [
    ("visa", "4", 16),
    ("visa", "4539", 16),
    ("mastercard", "51", 16),
    ("mastercard", "55", 16),
    ("mastercard", "2221", 16),
    ("mastercard", "2720", 16),
    ("amex", "34", 15),
    ("amex", "37", 15),
    ("discover", "6011", 16),
    ("discover", "65", 16),
    ("jcb", "3528", 16),
    ("diners", "36", 14),
    ("unionpay", "62", 19),
]

IBAN_FORMATS = [
    # country, BBAN layout (n: digit, a: capital letter, c: either); lengths as registered
    ("DE", "nnnnnnnnnnnnnnnnnn"),
    ("GB", "aaaannnnnnnnnnnnnn"),
    ("FR", "nnnnnnnnnncccccccccccnn"),
    ("NL", "aaaannnnnnnnnn"),
    ("ES", "nnnnnnnnnnnnnnnnnnnn"),
    ("IT", "annnnnnnnnncccccccccccc"),
    ("BE", "nnnnnnnnnnnn"),
    ("CH", "nnnnncccccccccccc"),
    ("AT", "nnnnnnnnnnnnnnnn"),
    ("PL", "nnnnnnnnnnnnnnnnnnnnnnnn"),
]


def card_number(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    return body + luhn_check_digit(body)


def card_formats(number: str) -> list[str]:
    if len(number) in (14, 15):  # Diners 4-6-4, Amex 4-6-5
        grouped = [number[:4], number[4:10], number[10:]]
    else:
        grouped = [number[i : i + 4] for i in range(0, len(number), 4)]
    return [number, " ".join(grouped), "-".join(grouped)]


IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27, "BE": 16, "CH": 21}
IBAN_LENGTHS |= {"AT": 20, "PL": 28}


def iban(rng: random.Random, country: str, layout: str) -> str:
    assert 4 + len(layout) == IBAN_LENGTHS[country], country
    alphabet = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + "ABCDEF"}
    bban = "".join(rng.choice(alphabet[kind]) for kind in layout)
    return country + iban_check_digits(country, bban) + bban


def spaced(compact: str) -> str:
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def french_nir(rng: random.Random) -> str:
    body = (
        rng.choice("12")
        + f"{rng.randint(40, 99):02d}{rng.randint(1, 12):02d}"
        + f"{rng.randint(1, 95):02d}{rng.randint(1, 990):03d}{rng.randint(1, 999):03d}"
    )
    key = f"{97 - int(body) % 97:02d}"
    return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:13]} {key}"


def spanish_dni(rng: random.Random) -> str:
    number = rng.randint(10_000_000, 99_999_999)
    return f"{number}{'TRWAGMYFPDXBNJZSQVHLCKE'[number % 23]}"


def secret(rng: random.Random, template: str) -> str:
    pools = {
        "alnum": string.ascii_letters + string.digits,
        "urlsafe": string.ascii_letters + string.digits + "-_",
        "upper_digits": string.ascii_uppercase + string.digits,
        "digits": string.digits,
        "hex": "0123456789abcdef",
        "letters": string.ascii_letters,
    }
    result = template
    while "{" in result:
        start = result.index("{")
        end = result.index("}", start)
        name = result[start + 1 : end]
        pool = name.rstrip(string.digits)
        length = int(name[len(pool) :])
        value = "".join(rng.choice(pools[pool]) for _ in range(length))
        if pool in ("alnum", "urlsafe") and not any(c.isdigit() for c in value):
            value = value[:-1] + "7"  # real keys of this length always hold a digit
        result = result[:start] + value + result[end + 1 :]
    return result


def jwt(rng: random.Random) -> str:
    def part(length: int) -> str:
        return "".join(
            rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(length)
        )

    return f"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{part(60)}.{part(43)}"


# --- Cases ----------------------------------------------------------------------------------------


def case(case_id: str, template: str, values: list[tuple[str, str]], lookalike: str = "") -> dict:
    """Fill ``template``'s {v}, {w} ... slots with ``values`` (kind, text); kind "" is not PII."""
    slots = ["{v}", "{w}", "{x}"]
    in_json = template.startswith(("{", "["))
    # Brace escapes become one placeholder character each, so positions do not move back.
    text = template.replace("{{", "\x01").replace("}}", "\x02")
    pii = []
    for slot, (kind, value) in zip(slots, values, strict=False):
        if in_json:
            value = json.dumps(value, ensure_ascii=False)[1:-1]
        start = text.index(slot)
        text = text[:start] + value + text[start + len(slot) :]
        if kind:
            pii.append({"kind": kind, "start": start, "end": start + len(value), "value": value})
    text = text.replace("\x01", "{").replace("\x02", "}")
    for item in pii:
        assert text[item["start"] : item["end"]] == item["value"], item
    return {"id": case_id, "text": text, "pii": pii, "lookalike": lookalike}


def cycle_templates(rng: random.Random, count: int) -> Iterator[str]:
    order = ALL_TEMPLATES[:]
    rng.shuffle(order)
    for index in range(count):
        yield order[index % len(order)]


def cases() -> Iterator[dict]:
    rng = random.Random(SEED)

    def positives(kind: str, values: list[str], per_value: int) -> Iterator[dict]:
        templates = cycle_templates(rng, len(values) * per_value)
        for index, value in enumerate(values):
            for repeat in range(per_value):
                yield case(f"{kind}-{index:03d}-{repeat}", next(templates), [(kind, value)])

    yield from positives("email", EMAILS, 3)
    yield from positives("phone", PHONES, 2)

    cards, bad_cards = [], []
    for _, prefix, length in CARD_PREFIXES:
        for formatted in card_formats(card_number(rng, prefix, length)):
            cards.append(formatted)
        invalid = card_number(rng, prefix, length)
        invalid = invalid[:-1] + str((int(invalid[-1]) + rng.randint(1, 9)) % 10)
        bad_cards.extend(card_formats(invalid)[:2])
    yield from positives("credit_card", cards, 1)

    ibans, bad_ibans = [], []
    for country, layout in IBAN_FORMATS:
        for _ in range(2):
            compact = iban(rng, country, layout)
            ibans += [compact, spaced(compact)]
        valid = iban(rng, country, layout)
        broken = valid[:2] + f"{(int(valid[2:4]) + rng.randint(1, 50)) % 97 + 2:02d}" + valid[4:]
        if broken[2:4] == valid[2:4]:
            broken = valid[:2] + ("11" if valid[2:4] != "11" else "12") + valid[4:]
        bad_ibans += [broken, spaced(broken)]
    ibans += ["GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00"]
    yield from positives("iban", ibans, 1)

    national = NATIONAL_IDS + [french_nir(rng) for _ in range(4)]
    national += [spanish_dni(rng) for _ in range(4)]
    yield from positives("national_id", national, 2)

    secrets = [secret(rng, template) for template in SECRET_TEMPLATES for _ in range(2)]
    secrets += [jwt(rng) for _ in range(4)]
    yield from positives("secret", secrets, 1)

    # Credentials that only their context marks as one: the token is PII, the label is not.
    contexts = [
        "Authorization: Bearer {v}",
        "curl -H 'Authorization: bearer {v}' https://api.example.com/v1/chat",
        '{{"headers": {{"authorization": "Bearer {v}"}}}}',
        "X-Api-Key: {v}",
        'client = Client(api_key="{v}")',
        "export ACCESS_TOKEN={v}",
        '{{"client_secret": "{v}", "grant_type": "client_credentials"}}',
        "db password: {v}",
    ]
    for index, template in enumerate(contexts):
        for repeat in range(2):
            token = secret(rng, "{alnum20}" if repeat else "{hex32}")
            yield case(f"secret-context-{index:02d}-{repeat}", template, [("secret", token)])

    # Several kinds in one text.
    mixed = [
        "From {v}, tel {w}: please charge card {x} again.",
        '{{"content": "email {v} / phone {w} / IBAN {x}"}}',
        "name: Jane Roe, mail: {v}, mobile: {w}, SSN {x}",
    ]
    for index in range(12):
        template = mixed[index % len(mixed)]
        third = {0: ("credit_card", cards[index]), 1: ("iban", ibans[index])}.get(
            index % len(mixed), ("national_id", NATIONAL_IDS[index % 3])
        )
        values = [("email", EMAILS[index]), ("phone", PHONES[index * 3 % len(PHONES)]), third]
        yield case(f"mixed-{index:02d}", template, values)

    # PII beside look-alikes in one text: only the PII may go.
    beside = [
        ("uuid", "request 123e4567-e89b-12d3-a456-426614174000 from {v}"),
        ("version", "v10.2.33 user {v} on 2024-05-01"),
        ("timestamp", "{v} at 1715443200123 (ms)"),
    ]
    for index, (what, template) in enumerate(beside * 4):
        kind, value = [
            ("email", EMAILS[index]),
            ("phone", PHONES[index * 5 % len(PHONES)]),
            ("credit_card", cards[index * 2]),
            ("secret", secrets[index]),
        ][index % 4]
        yield case(f"beside-{what}-{index:02d}", template, [(kind, value)], lookalike=what)

    # Look-alikes alone, each in a prose and a JSON template.
    for index, (what, text) in enumerate(LOOKALIKES):
        for repeat, template in enumerate(("{v}", JSON[index % len(JSON)])):
            yield case(f"lookalike-{index:03d}-{repeat}", template, [("", text)], lookalike=what)
    invalid_templates = cycle_templates(rng, len(bad_cards) + len(bad_ibans))
    for index, number in enumerate(bad_cards):
        template = next(invalid_templates)
        yield case(f"lookalike-card-{index:03d}", template, [("", number)], "card, Luhn-invalid")
    for index, number in enumerate(bad_ibans):
        template = next(invalid_templates)
        yield case(f"lookalike-iban-{index:03d}", template, [("", number)], "IBAN, bad checksum")


def main() -> None:
    lines = [json.dumps(item, ensure_ascii=False) for item in cases()]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} cases -> {OUTPUT}")


if __name__ == "__main__":
    main()
