"""Graders: whether a configuration's answer is as good as the largest configuration's.

A grader is chosen by name per workflow (`aragog-routing profile --grader SPEC`):

| spec | an answer matches its target when |
|---|---|
| `exact` | equal after stripping surrounding whitespace |
| `normalized` | equal after lower-casing, dropping punctuation and collapsing whitespace |
| `numeric[:TOL]` | the last number in the answer is within TOL (relative or absolute; default 1e-6) of the expected number |
| `choice` | the option letter (A-J) the answer gives equals the expected letter |
| `regex:PATTERN` | the pattern's first group (or whole match) in the answer equals the expected answer |
| `agree[:SPEC]` | it matches the LARGEST configuration's answer by SPEC (default `normalized`); needs no labels |
| `module:function` | the user's `function(answer, expected) -> bool` says so |

With labels, configuration c *preserves accuracy* on a request when it is right or the
largest is wrong (its score is at least the largest's). `agree` is the paper's definition,
for data without labels: c preserves when it answers as the largest does.
"""

from __future__ import annotations

import importlib
import math
import re
import string
from collections.abc import Callable
from typing import ClassVar

MAX_PATTERN = 200
_NUMBER = re.compile(r"[-+]?(?:\d+(?:[.,]\d+)*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_PUNCT = str.maketrans("", "", string.punctuation)
_LETTER_ALONE = re.compile(r"^\(?([A-J])\)?(?:[.):]|$)")
_LETTER_SAID = re.compile(r"answer(?:\s+is)?\s*[:\-]?\s*\(?([A-J])\)?\b", re.IGNORECASE)
_LETTER_PAREN = re.compile(r"\(([A-J])\)")


class GraderError(ValueError):
    """Unknown or malformed grader spec, or a dataset the grader cannot grade."""


class Grader:
    """Base: `match(answer, target)`; `needs_labels` graders compare with `expected`."""

    name: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = True
    _registry: ClassVar[dict[str, type[Grader]]] = {}
    spec: str = ""

    def __init_subclass__(cls, name: str = "", **kw: object) -> None:
        super().__init_subclass__(**kw)
        if name:
            cls.name = name
            Grader._registry[name] = cls

    def __init__(self, arg: str = ""):
        if arg:
            raise GraderError(f"grader {self.name} takes no argument")

    def match(self, answer: str, target: str) -> bool:
        raise NotImplementedError

    def check_expected(self, expected: str) -> None:
        """Raise GraderError if `expected` cannot be a target of this grader."""

    def preserves(self, answer: str, reference: str, expected: str | None) -> bool:
        """Is `answer` graded at least as well as the largest configuration's `reference`?"""
        assert expected is not None
        return self.match(answer, expected) or not self.match(reference, expected)

    def largest_correct(self, reference: str, expected: str | None) -> bool:
        return True if expected is None else self.match(reference, expected)


class Exact(Grader, name="exact"):
    def match(self, answer, target):
        return answer.strip() == target.strip()


def normalize(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


class Normalized(Grader, name="normalized"):
    def match(self, answer, target):
        return normalize(answer) == normalize(target)


def last_number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


class Numeric(Grader, name="numeric"):
    def __init__(self, arg: str = ""):
        try:
            self.tol = float(arg) if arg else 1e-6
        except ValueError:
            raise GraderError(f"grader numeric:TOL needs a number, not {arg[:40]!r}") from None
        if not self.tol >= 0:
            raise GraderError("grader numeric:TOL needs a tolerance >= 0")

    def check_expected(self, expected):
        if last_number(expected) is None:
            raise GraderError(f"expected answer {expected[:40]!r} holds no number")

    def match(self, answer, target):
        a, e = last_number(answer), last_number(target)
        return a is not None and e is not None and math.isclose(a, e, rel_tol=self.tol,
                                                                abs_tol=self.tol)


def choice_letter(text: str) -> str | None:
    """The option letter an answer gives: `B` alone or leading as `(B)`, `B.`, `B)`, `B:` (not
    the word `I` of `I pick`); else `answer is B`; else the first `(B)`."""
    text = text.strip()
    for rx in (_LETTER_ALONE, _LETTER_SAID, _LETTER_PAREN):
        m = rx.search(text)
        if m:
            return m.group(1).upper()
    return None


class Choice(Grader, name="choice"):
    def check_expected(self, expected):
        if choice_letter(expected) is None:
            raise GraderError(f"expected answer {expected[:40]!r} is not an option letter A-J")

    def match(self, answer, target):
        a = choice_letter(answer)
        return a is not None and a == choice_letter(target)


class Regex(Grader, name="regex"):
    def __init__(self, arg: str = ""):
        if not arg or len(arg) > MAX_PATTERN:
            raise GraderError(f"grader regex:PATTERN needs a pattern of 1-{MAX_PATTERN} characters")
        try:
            self.rx = re.compile(arg)
        except re.error as e:
            raise GraderError(f"grader regex: bad pattern ({e})") from None

    def extract(self, answer: str) -> str | None:
        m = self.rx.search(answer)
        if m is None:
            return None
        return (m.group(1) if self.rx.groups else m.group(0)).strip()

    def match(self, answer, target):
        got = self.extract(answer)
        return got is not None and got == target.strip()


class Agree(Grader, name="agree"):
    """The paper's definition: as good as the largest means answering as it does."""

    needs_labels = False

    def __init__(self, arg: str = ""):
        self.by = make(arg or "normalized")
        if isinstance(self.by, Agree):
            raise GraderError("grader agree:SPEC takes a matching grader, not agree")

    def match(self, answer, target):
        return self.by.match(answer, target)

    def preserves(self, answer, reference, expected):
        return self.by.match(answer, reference)

    def largest_correct(self, reference, expected):
        return True if expected is None else self.by.match(reference, expected)


class UserFunction(Grader):
    """`module:function`: the user's own `function(answer: str, expected: str) -> bool`."""

    def __init__(self, fn: Callable[[str, str], object], spec: str):
        self.fn = fn
        self.spec = spec

    def match(self, answer, target):
        return bool(self.fn(answer, target))


_USER = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def names() -> list[str]:
    return sorted(Grader._registry)


def make(spec: str) -> Grader:
    """Build a grader from its spec (`numeric:0.01`, `regex:ANSWER: (\\w+)`, `pkg.mod:fn`)."""
    name, _, arg = spec.partition(":")
    cls = Grader._registry.get(name)
    if cls is not None:
        grader = cls(arg)
    elif _USER.match(spec):
        module, _, fn_name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), fn_name)
        except (ImportError, AttributeError) as e:
            raise GraderError(f"grader {spec!r}: cannot import {fn_name} from {module} ({e})") from None
        if not callable(fn):
            raise GraderError(f"grader {spec!r}: {fn_name} is not callable")
        grader = UserFunction(fn, spec)
    else:
        raise GraderError(
            f"unknown grader {spec[:60]!r}; known: {', '.join(names())} "
            "(numeric:TOL, regex:PATTERN, agree:SPEC), or module:function")
    grader.spec = spec
    return grader


def check(grader: Grader, records) -> None:
    """Raise GraderError naming the first record this grader cannot grade."""
    for r in records:
        where = f"line {r.line} (id {r.id!r})" if r.line else f"request {r.id!r}"
        if r.expected is None:
            if grader.needs_labels:
                raise GraderError(
                    f"{where}: no `expected` answer, which grader {grader.spec} needs "
                    "(add one, or use grader agree, which needs no labels)")
            continue
        try:
            grader.check_expected(r.expected)
        except GraderError as e:
            raise GraderError(f"{where}: {e} (grader {grader.spec})") from None
