"""The active vocabulary: validated object and part names, an optional object->parts restriction, a revision.

Validation lives here, not in the ROS layer, so the service, the parameters, the bag tools and the
Segmenter all reject the same bad input with the same message.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from partglee_ros.model.text_encoder import category_prompt

MAX_NAMES_PER_LEVEL = 2000  # LVIS has 1203 classes; far more is a client bug, not a vocabulary
MAX_NAME_LENGTH = 200  # characters; text encoders truncate long before this


class VocabularyError(ValueError):
    """A vocabulary was rejected; the message says which names and why."""


@dataclass(frozen=True)
class Vocabulary:
    objects: tuple[str, ...]
    parts: tuple[str, ...]
    object_parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    revision: int = 0

    def allowed_parts(self, object_name: str) -> tuple[str, ...]:
        """Parts that may be reported under `object_name` (all parts when no restriction is given for it)."""
        return self.object_parts.get(object_name, self.parts)

    def describe(self) -> str:
        """'revision 2: 1 object, 0 parts (mug: handle)': the line logs and set_vocabulary's answer show."""
        mapping = "; ".join(f"{o}: {', '.join(p)}" for o, p in self.object_parts.items())
        text = f"revision {self.revision}: {_count(self.objects, 'object')}, {_count(self.parts, 'part')}"
        return f"{text} ({mapping})" if mapping else text


def _count(names: tuple[str, ...], noun: str) -> str:
    return f"{len(names)} {noun}" + ("" if len(names) == 1 else "s")


def normal_name(name: str) -> str:
    """Whitespace collapsed, Unicode composed (NFC): "mu\u0301g" and "m\u00fag" are one name."""
    return unicodedata.normalize("NFC", " ".join(name.split()))


def _fold(name: str) -> str:
    """A name as the text encoder sees it (its prompt, where ``_`` reads as a space; MiniLM's uncased
    tokenizer: lower case, NFD, accents dropped): names must differ in more than that."""
    words = " ".join(category_prompt(name).split()).lower()
    return "".join(c for c in unicodedata.normalize("NFD", words) if not unicodedata.combining(c))


def _clean_names(names: Iterable[str], level: str) -> tuple[str, ...]:
    if isinstance(names, str):
        raise VocabularyError(f"{level} names must be a list of strings, not one string")
    if not isinstance(names, Iterable):
        raise VocabularyError(f"{level} names must be a list of strings, got {type(names).__name__}")
    cleaned = []
    for i, name in enumerate(names):
        if i == MAX_NAMES_PER_LEVEL:  # checked as names arrive: an endless iterator must not hang here
            raise VocabularyError(
                f"more than {MAX_NAMES_PER_LEVEL} {level} names; the limit is {MAX_NAMES_PER_LEVEL}"
            )
        if not isinstance(name, str):
            raise VocabularyError(f"{level} name #{i} is {type(name).__name__}, not a string")
        name = normal_name(name)
        if not name:
            raise VocabularyError(f"{level} name #{i} is empty")
        if not _fold(name):
            raise VocabularyError(f"{level} name #{i} ({name!r}) has no words (underscores read as spaces)")
        if len(name) > MAX_NAME_LENGTH:
            raise VocabularyError(
                f"{level} name #{i} has {len(name)} characters; the limit is {MAX_NAME_LENGTH}"
            )
        if not name.isprintable():
            raise VocabularyError(f"{level} name #{i} ({name!r}) contains control characters")
        if ":" in name:
            raise VocabularyError(f"{level} name {name!r} contains ':', reserved for 'object:part' labels")
        cleaned.append(name)
    counts = Counter(_fold(n) for n in cleaned)
    duplicates = [n for n in cleaned if counts[_fold(n)] > 1]
    if duplicates:
        raise VocabularyError(
            f"duplicate {level} names (names must differ in more than case, accents and '_' for ' '): "
            f"{', '.join(duplicates)}"
        )
    return tuple(cleaned)


def parse_object_parts(lines: Iterable[str]) -> dict[str, list[str]]:
    """Parse ``"mug: handle, body"`` lines (the parameter and CLI form of the restriction), one per object:
    a second line for an object is refused rather than silently replacing the first."""
    if isinstance(lines, str) or not isinstance(lines, Iterable):
        raise VocabularyError(f"object_parts must be a list of 'object: part, part' strings, got {lines!r}")
    mapping: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        if i == MAX_NAMES_PER_LEVEL:
            raise VocabularyError(f"more than {MAX_NAMES_PER_LEVEL} object_parts entries (one per object)")
        if not isinstance(line, str):
            raise VocabularyError(f"object_parts entry #{i} is {type(line).__name__}, not a string")
        obj, sep, parts = line.partition(":")
        if not sep:
            raise VocabularyError(f"object_parts entry {line!r} is not of the form 'object: part, part'")
        obj = normal_name(obj)
        if obj in mapping:
            raise VocabularyError(f"object_parts has two entries for {obj!r}; list its parts in one")
        mapping[obj] = [p.strip() for p in parts.split(",") if p.strip()]
    return mapping


def make_vocabulary(
    objects: Iterable[str],
    parts: Iterable[str],
    object_parts: Mapping[str, Iterable[str]] | None = None,
    revision: int = 0,
) -> Vocabulary:
    """Validate names and the restriction; raise VocabularyError with a readable reason."""
    objs = _clean_names(objects, "object")
    prts = _clean_names(parts, "part")
    if not objs:
        raise VocabularyError("the vocabulary needs at least one object name")
    if object_parts is not None and not isinstance(object_parts, Mapping):
        raise VocabularyError(
            f"object_parts must map object names to part lists, got {type(object_parts).__name__}"
        )
    restriction: dict[str, tuple[str, ...]] = {}
    for obj, obj_parts in (object_parts or {}).items():
        if not isinstance(obj, str):
            raise VocabularyError(f"object_parts key {obj!r} is {type(obj).__name__}, not an object name")
        obj_clean = normal_name(obj)
        if obj_clean in restriction:
            raise VocabularyError(f"object_parts names object {obj_clean!r} twice; list its parts once")
        if obj_clean not in objs:
            raise VocabularyError(
                f"object_parts names object {obj_clean!r}, which is not in the objects list"
            )
        listed = _clean_names(obj_parts, f"{obj_clean!r} part")
        unknown = [p for p in listed if p not in prts]
        if unknown:
            raise VocabularyError(f"object_parts for {obj_clean!r} names unknown parts: {', '.join(unknown)}")
        restriction[obj_clean] = listed
    return Vocabulary(objs, prts, restriction, revision)
