"""Labels: a client's own `{key: value}` tags on a job or a sweep (its ids, a team, a
purpose), returned with it and filtered on in GET /v1/jobs?label=key:value.

Bounded so that they stay an index, not a store: at most MAX_LABELS a job, keys of
1..MAX_KEY_LENGTH characters from KEY_CHARSET starting with a letter or digit (no ':',
which separates key and value in a filter), values of at most MAX_VALUE_LENGTH
characters without control characters. The database keeps one row per label with an
index on (key, value) (service.store.models.JobLabel).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

MAX_LABELS = 32
MAX_KEY_LENGTH = 63
MAX_VALUE_LENGTH = 256
KEY_CHARSET = "letters, digits, '.', '_', '-' and '/'"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

LABELS_HELP = (
    f'Your own tags, e.g. {{"team": "fraud", "ticket": "ML-42"}}: at most {MAX_LABELS}; '
    f"keys 1..{MAX_KEY_LENGTH} characters of {KEY_CHARSET}, starting with a letter or digit; "
    f"values strings of at most {MAX_VALUE_LENGTH} characters, no control characters. "
    "Filter jobs by them with GET /v1/jobs?label=key:value."
)


def check_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValueError(
            f"label key {key[:80]!r} is not allowed: expected 1..{MAX_KEY_LENGTH} characters "
            f"of {KEY_CHARSET}, starting with a letter or digit"
        )
    return key


def check_value(key: str, value: str) -> str:
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(
            f"label {key!r}: its value has {len(value)} characters; at most {MAX_VALUE_LENGTH}"
        )
    if _CONTROL.search(value):
        raise ValueError(f"label {key!r}: its value holds a control character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"label {key!r}: its value holds a lone surrogate") from exc
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} labels; at most {MAX_LABELS}")
    for key, value in labels.items():
        check_value(check_key(key), value)
    return labels


# The pydantic type of a `labels` field (strict strings: a number is not a label value).
Labels = Annotated[dict[str, str], AfterValidator(check_labels)]


def parse_filter(text: str) -> tuple[str, str]:
    """A `label` query parameter, `key:value` (the value may hold ':'), checked as a
    label is; ValueError saying what was expected."""
    key, colon, value = text.partition(":")
    if not colon:
        raise ValueError(f"label filter {text[:80]!r} is not key:value")
    return check_key(key), check_value(key, value)
