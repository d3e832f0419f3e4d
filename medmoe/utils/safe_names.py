"""Ids as file names: one name per id that stays inside its folder, is valid on every OS, and never collides.

A cohort id is data (``../../../x``, ``a/b/x``, ``CON``, ``.bashrc``): where it becomes a file name it must not
leave the output folder, create folders, hit a Windows device name or hide the file. :func:`safe_stem` makes a
name of the characters ``A-Z a-z 0-9 _ . -`` (any other run becomes ``_``), without leading or trailing dots,
never a reserved device name, at most ``max_length`` characters. :func:`id_file_stem` keeps a clean id as it is
and gives a changed one a suffix from the id's SHA-1 (``a/b`` -> ``a_b-<8 hex>``), so two ids that sanitise alike
(``a/b``, ``a_b``) still get different names, deterministically. :class:`FileNames` hands out those names for one
folder, logs each id it had to rename, and raises naming both ids if two would still share a file (case-folded:
``Case1`` and ``case1`` are one file on macOS and Windows).
"""

from __future__ import annotations

import hashlib
import logging
import re

__all__ = ["FileNames", "id_file_stem", "safe_stem"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)), *(f"LPT{i}" for i in range(10))}


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _clean(text: str) -> str:
    stem = _UNSAFE.sub("_", text)
    stem = re.sub(r"^\.+", "_", stem).rstrip(". ") or "_"  # leading dots hide a file; '.'/'..' name folders
    if stem.split(".")[0].upper() in _RESERVED:  # Windows: CON, con.txt, COM1 ... are devices
        stem = "_" + stem
    return stem


def _with_digest(stem: str, text: str, max_length: int) -> str:
    return f"{stem[: max_length - 9].rstrip('. ') or '_'}-{_digest(text)}"


def safe_stem(text: str, max_length: int = 100) -> str:
    """A file name stem made from ``text``: no separators, no ``..``, no leading dot, no reserved device name.

    Args:
        text: an id or a task name.
        max_length: longest stem kept (at least 16); a longer one is cut and ends with 8 hex digits of its SHA-1.

    Returns:
        A non-empty stem of ``A-Z a-z 0-9 _ . -``.

    Raises:
        ValueError: for ``max_length`` below 16.

    Example:
        >>> safe_stem("../../../x"), safe_stem("a/b/x"), safe_stem("CON"), safe_stem("")
        ('__.._.._x', 'a_b_x', '_CON', '_')
    """
    if max_length < 16:
        raise ValueError(f"max_length must be at least 16, got {max_length}")
    stem = _clean(str(text))
    return stem if len(stem) <= max_length else _with_digest(stem, str(text), max_length)


def id_file_stem(sample_id: object, max_length: int = 100) -> str:
    """The file stem of an id: the id itself when it is already safe, else its safe stem plus 8 hex of its SHA-1.

    Example:
        >>> id_file_stem("case_001"), id_file_stem("a/b")
        ('case_001', 'a_b-3ec69c85')
    """
    text = str(sample_id)
    stem = safe_stem(text, max_length)
    return stem if stem == text else _with_digest(_clean(text), text, max_length)


class FileNames:
    """File stems for the ids written into one folder, unique and reported.

    Args:
        folder: what the names are for (used in messages).
        max_length: longest stem.

    Raises (from :meth:`__call__`):
        ValueError: naming both ids when two different ids would be written to the same file.

    Example:
        >>> names = FileNames("out/cup_masks")
        >>> names("case_1"), names("a/b")
        ('case_1', 'a_b-3ec69c85')
    """

    def __init__(self, folder: object, max_length: int = 100) -> None:
        self.folder, self.max_length = folder, max_length
        self.owner: dict[str, str] = {}  # case-folded stem -> the id that has it
        self.renamed: dict[str, str] = {}  # id -> stem, for ids that could not be used as they are

    def __call__(self, sample_id: object) -> str:
        text = str(sample_id)
        stem = id_file_stem(text, self.max_length)
        other = self.owner.setdefault(stem.casefold(), text)
        if other != text:
            raise ValueError(
                f"ids {other!r} and {text!r} would both be written to {self.folder}/{stem}.*: "
                "make the cohort's ids unique (case-insensitively)"
            )
        if stem != text and text not in self.renamed:
            self.renamed[text] = stem
            logger.warning(f"id {text!r} is not a safe file name: written to {self.folder}/{stem}.*")
        return stem
