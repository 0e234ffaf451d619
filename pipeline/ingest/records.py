"""What a document is, whatever file it comes from: its text, its group, its size; and what a bad one is.

`Fields` says where a corpus keeps the text and the group (dotted paths into a JSON object or a
parquet struct column): `text` and `meta.pile_set_name` for the Pile, `meta.redpajama_set_name` for
SlimPajama, `source` for Dolma. A document without a group, or a corpus read with no group field,
goes to the group UNLABELLED.
"""

from dataclasses import dataclass
from pathlib import Path

UNLABELLED = "(none)"
ENCODE_CHARS = 1 << 20  # characters encoded at a time to count a text's UTF-8 bytes


@dataclass(frozen=True)
class Fields:
    text: str = "text"
    """Dotted path of the document's text."""
    group: str | None = "meta.pile_set_name"
    """Dotted path of the document's group (what evaluation reports bits per byte by); None: no groups."""

    @property
    def group_name(self) -> str:
        """The group field's last part, as bad-record kinds name it (`pile_set_name not a string`)."""
        return (self.group or "").rsplit(".", 1)[-1]


PILE_FIELDS = Fields()


@dataclass(frozen=True)
class Record:
    text: str
    group: str
    n_bytes: int
    """UTF-8 length of `text`; bits per byte are measured against it."""


class BadRecord(ValueError):
    """A line or row that is not a document; the caller decides whether to stop or skip and count."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind} ({detail})" if detail else kind)
        self.kind = kind
        """A short, stable category for the stats: `not valid JSON`, `invalid UTF-8`, ..."""


def text_record(text: object, group: object, fields: Fields) -> Record:
    """Check a document's text and group values, wherever they were read from."""
    if not isinstance(text, str):
        raise BadRecord(
            f"no string '{fields.text}'",
            "missing or null" if text is None else f"'{fields.text}' is a {type(text).__name__}",
        )
    n_bytes = utf8_length(text, fields)
    if group is not None and not isinstance(group, str):
        raise BadRecord(f"{fields.group_name} not a string", f"got {type(group).__name__}")
    return Record(text=text, group=group or UNLABELLED, n_bytes=n_bytes)


def utf8_length(text: str, fields: Fields) -> int:
    """The text's UTF-8 length, counted ENCODE_CHARS characters at a time (a long document is not held
    twice); raises BadRecord at a lone surrogate, which UTF-8 cannot hold."""
    if text.isascii():
        return len(text)
    n_bytes = 0
    for start in range(0, len(text), ENCODE_CHARS):
        try:
            n_bytes += len(text[start : start + ENCODE_CHARS].encode("utf-8"))
        except UnicodeEncodeError as exc:
            at = start + exc.start
            raise BadRecord("lone surrogate", f"\\u{ord(text[at]):04x} at character {at} of '{fields.text}'") from None
    return n_bytes


def bad_record_message(path: Path, unit: str, number: int, reason: str) -> str:
    return f"{path}: {unit} {number:,}: {reason}; set data.on_bad_record: skip to skip and count such records"
