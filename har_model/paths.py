"""Names from data (class names, uploaded file names) made safe to use as one file name.

A class name is a label first: it is kept exactly as it is in ``id2label``, the dataset's ClassLabel and the cards.
Only where it becomes part of a path does it go through ``safe_filename``, so that ``../../x`` cannot leave the
folder, a 250-character name cannot exceed the file-system limit, and two names that clean up alike still get two
different files.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

MAX_NAME_BYTES = 80  # far below the usual 255-byte limit, leaving room for suffixes such as "_12.jpg"
_UNSAFE = re.compile(r"[^\w.\- ]+")  # \w is Unicode-aware: letters of any script stay readable


def safe_filename(name: str, max_bytes: int = MAX_NAME_BYTES, fallback: str = "item") -> str:
    """``name`` as one harmless path component: no separators, no leading dot, at most ``max_bytes`` UTF-8 bytes.

    A name that had to change gets a short hash of the original appended, so distinct names stay distinct.
    """
    text = unicodedata.normalize("NFC", str(name))
    cleaned = _UNSAFE.sub("_", text).strip(" .")
    cleaned = cleaned.lstrip("-") or fallback
    if cleaned == text and len(cleaned.encode()) <= max_bytes:
        return cleaned
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    room = max_bytes - len(digest) - 1
    head = cleaned.encode()[:room].decode("utf-8", "ignore").rstrip(" ._") or fallback
    return f"{head}-{digest}"
