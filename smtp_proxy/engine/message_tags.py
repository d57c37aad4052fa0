"""Tags and metadata a sending application sets on a message, and its click-tracking switches.

Pure parsing of the top-level header block. The application names a message with one
tag and a flat object of short strings (metadata); both are sealed into every tracked
link of the message and come back with each click (stats, export, webhooks). Our own
headers and the ones apps already send to an ESP are read the same way:

========================  ===========================================================
``X-Clickrelay-Tag``      the tag
``X-Clickrelay-Metadata`` a flat JSON object of strings
``X-Mailgun-Tag``         the tag (Mailgun allows several: the first one is kept)
``X-Mailgun-Variables``   a flat JSON object (metadata)
``X-PM-Tag``              the tag (Postmark)
``X-PM-Metadata-<key>``   one metadata field per header (Postmark)
``X-SES-MESSAGE-TAGS``    ``k=v, k=v`` (metadata)
``X-SMTPAPI``             JSON: ``category`` → tag, ``unique_args`` → metadata (SendGrid)
========================  ===========================================================

The ESPs' per-message click-tracking switches turn tracking off like
``X-Clickrelay-Track: off``: ``X-Mailgun-Track-Clicks: no`` (or ``X-Mailgun-Track:
no``), ``X-PM-TrackLinks: None``, and SendGrid's ``filters.clicktrack.settings.enable``
false in ``X-SMTPAPI``.

Our own headers win over an ESP's for the tag and for a metadata key set in both. Every
header named here is removed before the message is relayed. Metadata that is not a flat
object of short strings is refused (``metadata-invalid``): never truncated, never
guessed at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

TAG_HEADER = "X-Clickrelay-Tag"
METADATA_HEADER = "X-Clickrelay-Metadata"
MAILGUN_TAG = "X-Mailgun-Tag"
MAILGUN_VARIABLES = "X-Mailgun-Variables"
MAILGUN_TRACK_CLICKS = "X-Mailgun-Track-Clicks"
MAILGUN_TRACK = "X-Mailgun-Track"
PM_TAG = "X-PM-Tag"
PM_METADATA_PREFIX = "X-PM-Metadata-"
PM_TRACK_LINKS = "X-PM-TrackLinks"
SES_TAGS = "X-SES-MESSAGE-TAGS"
SMTPAPI = "X-SMTPAPI"

#: The headers this module reads (the Postmark metadata ones by prefix); all are removed.
FIXED_HEADERS = (
    TAG_HEADER,
    METADATA_HEADER,
    MAILGUN_TAG,
    MAILGUN_VARIABLES,
    MAILGUN_TRACK_CLICKS,
    MAILGUN_TRACK,
    PM_TAG,
    PM_TRACK_LINKS,
    SES_TAGS,
    SMTPAPI,
)
_FIXED_LOWER = frozenset(h.lower() for h in FIXED_HEADERS)

#: Limits of one tag, one metadata key and one value (characters) and of the field count.
MAX_TAG_CHARS = 128
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 1024
MAX_FIELDS = 64

INVALID = "metadata-invalid"
_OFF = frozenset({"no", "false", "off", "0", "none", "disabled"})
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class TagError(ValueError):
    """The tag or metadata cannot be used; the message's links are left untracked."""


@dataclass(frozen=True)
class MessageTags:
    """What the headers say; ``error`` is ``metadata-invalid`` when they cannot be used."""

    tag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    tracking_off: bool = False
    error: str | None = None
    #: The names of the headers found (as written), to be removed before relaying.
    headers: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.tag is None and not self.metadata


def is_tag_header(name: str) -> bool:
    lower = name.strip().lower()
    return lower in _FIXED_LOWER or (
        lower.startswith(PM_METADATA_PREFIX.lower()) and len(lower) > len(PM_METADATA_PREFIX)
    )


#: Every tag header's line and its folded continuation lines, in a raw header block.
_FIELD_RE = re.compile(
    rb"(?im)^(x-clickrelay-(?:tag|metadata)|x-mailgun-(?:tag|variables|track-clicks|track)"
    rb"|x-pm-(?:tag|tracklinks|metadata-[!-9;-~]+)|x-ses-message-tags|x-smtpapi)"
    rb"[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)"
)


def tag_fields(block: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` of every tag header in a raw header block, in order (the
    value unfolded, UTF-8; a byte that is not becomes U+FFFD)."""
    if b"-" not in block:
        return []
    return [
        (m.group(1).decode("ascii"), _unfold(m.group(2).decode("utf-8", "replace")))
        for m in _FIELD_RE.finditer(block)
    ]


def _check_text(value: str, limit: int, what: str) -> str:
    if not value or len(value) > limit or _CONTROL_RE.search(value):
        raise TagError(f"{what} must be 1-{limit} characters without control characters")
    return value


def _scalar(value: Any, what: str) -> str:
    """A metadata value: a string, or a number/boolean (kept as its JSON text)."""
    if isinstance(value, str):
        return _check_text(value, MAX_VALUE_CHARS, what)
    if isinstance(value, bool | int | float) and value == value:  # not NaN
        return json.dumps(value)
    raise TagError(f"{what} must be a string, a number or a boolean")


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise TagError(f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise TagError(f"{what} must be a JSON object")
    return value


def _flat(obj: Mapping[str, Any], what: str) -> dict[str, str]:
    return {
        _check_text(str(k), MAX_KEY_CHARS, f"{what} key"): _scalar(v, f"{what}[{k!r}]")
        for k, v in obj.items()
    }


def parse_ses_tags(text: str) -> dict[str, str]:
    """``k=v, k=v`` (SES message tags) → metadata; raises TagError."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise TagError(f"{SES_TAGS}: expected name=value, got {item!r}")
        out[_check_text(key.strip(), MAX_KEY_CHARS, "tag name")] = _check_text(
            value.strip(), MAX_VALUE_CHARS, "tag value"
        )
    return out


def _smtpapi(text: str) -> tuple[str | None, dict[str, str], bool]:
    obj = _json_object(text, SMTPAPI)
    tag = None
    category = obj.get("category")
    if isinstance(category, list):
        category = category[0] if category else None
    if category is not None:
        if not isinstance(category, str):
            raise TagError(f"{SMTPAPI}: category must be a string or a list of strings")
        tag = _check_text(category, MAX_TAG_CHARS, "category")
    args = obj.get("unique_args", {})
    if not isinstance(args, dict):
        raise TagError(f"{SMTPAPI}: unique_args must be an object")
    off = False
    filters = obj.get("filters")
    if isinstance(filters, dict):
        click = filters.get("clicktrack")
        settings = click.get("settings") if isinstance(click, dict) else None
        enable = settings.get("enable") if isinstance(settings, dict) else None
        off = enable is not None and str(enable).strip().lower() in _OFF
    return tag, _flat(args, f"{SMTPAPI} unique_args"), off


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n[ \t]", " ", value).strip()


def read_block(block: bytes) -> MessageTags:
    """:func:`read_tags` of a raw top-level header block."""
    return read_tags(tag_fields(block))


def read_tags(headers: Iterable[tuple[str, str]]) -> MessageTags:
    """The tags of a message from its top-level ``(name, value)`` header pairs.

    Never raises: unusable input gives ``error = "metadata-invalid"`` (the headers are
    still listed, so they are removed all the same).
    """
    found: list[str] = []
    tags: list[str] = []  # by priority: ours first
    ours: dict[str, str] = {}
    esp: dict[str, str] = {}
    off = False
    error: str | None = None
    own_tag: str | None = None
    for raw_name, raw_value in headers:
        name = raw_name.strip()
        if not is_tag_header(name):
            continue
        found.append(name)
        lower = name.lower()
        value = _unfold(str(raw_value))
        try:
            if lower == TAG_HEADER.lower():
                if own_tag is None:
                    own_tag = _check_text(value, MAX_TAG_CHARS, TAG_HEADER)
            elif lower == METADATA_HEADER.lower():
                ours.update(_flat(_json_object(value, METADATA_HEADER), METADATA_HEADER))
            elif lower in (MAILGUN_TAG.lower(), PM_TAG.lower()):
                tags.append(_check_text(value, MAX_TAG_CHARS, name))
            elif lower == MAILGUN_VARIABLES.lower():
                esp.update(_flat(_json_object(value, name), name))
            elif lower in (MAILGUN_TRACK_CLICKS.lower(), MAILGUN_TRACK.lower()):
                off = off or value.lower() in _OFF
            elif lower == PM_TRACK_LINKS.lower():
                off = off or value.lower() in _OFF
            elif lower == SES_TAGS.lower():
                esp.update(parse_ses_tags(value))
            elif lower == SMTPAPI.lower():
                category, args, clicks_off = _smtpapi(value)
                if category is not None:
                    tags.append(category)
                esp.update(args)
                off = off or clicks_off
            else:  # X-PM-Metadata-<key>
                key = name[len(PM_METADATA_PREFIX) :]
                esp[_check_text(key, MAX_KEY_CHARS, "metadata key")] = _check_text(
                    value, MAX_VALUE_CHARS, name
                )
        except TagError:
            error = INVALID
    metadata = {**esp, **ours}
    if len(metadata) > MAX_FIELDS:
        error = INVALID
    tag = own_tag if own_tag is not None else (tags[0] if tags else None)
    if error is not None:
        return MessageTags(tracking_off=off, error=error, headers=tuple(found))
    return MessageTags(tag, metadata, off, None, tuple(found))
