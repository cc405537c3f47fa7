"""What counts as query text: the one check every entry point of caller text shares (search bodies,
explain URLs, filter values), so the cache key, the URLs built from it and the logs only ever see
text that encodes as UTF-8."""

from __future__ import annotations

import unicodedata

# Characters with no width or glyph: a query of only these is as empty as one of only spaces (the
# tokenizer drops them, so the model would search for nothing).
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Zs", "Zl", "Zp"})


def lone_surrogate(text: str) -> int | None:
    """Index of the first unpaired UTF-16 surrogate (JSON's ``"\\ud800"``), or ``None``.

    Python keeps such a code point in a ``str`` but it has no UTF-8 form: quoting it into a URL,
    hashing it into a key or writing it to a log raises ``UnicodeEncodeError``.
    """
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return i
    return None


def check_encodable(field: str, text: str) -> str:
    """``text`` unchanged, or ``ValueError`` naming the field and where the lone surrogate is."""
    at = lone_surrogate(text)
    if at is not None:
        raise ValueError(
            f"{field}: contains a lone UTF-16 surrogate (U+{ord(text[at]):04X} at character {at}), "
            "which is not valid Unicode text"
        )
    return text


def is_blank(text: str) -> bool:
    """Only whitespace, control or zero-width characters (e.g. U+200B, U+2060, U+FEFF)."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)


def query_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` is not a usable query (a message naming ``query``), or ``None`` when it is."""
    try:
        check_encodable("query", text)
    except ValueError as exc:
        return str(exc)
    if is_blank(text):
        return "query: must not be empty or only whitespace or invisible (zero-width) characters"
    if len(text) > max_chars:
        return f"query: {len(text)} characters, over the limit of {max_chars}"
    return None
