"""Alert rules on frames.csv's columns (`ga monitor --alert RULE`).

A rule is one comparison of a column with a number, on this frame or over a rolling window:

    pg_fraction > 0.10                  this frame's value
    pg_fraction > 0.10 over 5 frames    the mean of the last 5 frames' values
    particles < 10 for 3 frames         each of the last 3 frames (all three present)
    pg_d50_um >= 40 over 10 frames

Columns are frames.csv's numeric ones (`particles`, `<class>_count`, `<class>_fraction`,
`<class>_fraction_lo`/`_hi`, `<class>_d50_px` ...); operators `>`, `>=`, `<`, `<=`,
`==`, `!=`. A frame without a value (a fraction of a frame with no particle, a skipped
frame) is left out of a mean and fails a `for` window. A rule fires on the frame where it
becomes true and again only after it has been false.
"""

from __future__ import annotations

import math
import operator
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ga.errors import GAError

OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}
_RULE = re.compile(r"^\s*(?P<column>[A-Za-z_][\w]*)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>[-+]?(\d+\.?\d*|\.\d+)"
                   r"([eE][-+]?\d+)?)\s*(?:(?P<how>over|for)\s+(?P<n>\d+)\s+frames?)?\s*$")


@dataclass
class Rule:
    """One parsed rule and its state over the frames seen so far."""

    text: str
    column: str
    op: str
    value: float
    how: str = ""  # "", "over" (mean of the window) or "for" (each frame of the window)
    window: int = 1
    _recent: deque = field(default_factory=deque, repr=False)
    _active: bool = False

    @property
    def active(self) -> bool:
        """Whether the rule held on the last frame observed."""
        return self._active

    def observe(self, row: Mapping[str, object]) -> float | None:
        """Take one frame's row; the value that made the rule fire on it, or None."""
        self._recent.append(_number(row.get(self.column)))
        while len(self._recent) > self.window:
            self._recent.popleft()
        value, holds = self._evaluate()
        fired = holds and not self._active
        self._active = holds
        return value if fired else None

    def _evaluate(self):
        values = list(self._recent)
        test = OPS[self.op]
        if self.how == "for":
            ok = len(values) == self.window and all(v is not None and test(v, self.value) for v in values)
            return (values[-1] if values else None), ok
        present = [v for v in values if v is not None]
        if not present:
            return None, False
        v = sum(present) / len(present) if self.how == "over" else values[-1]
        return v, v is not None and test(v, self.value)


def _number(v):
    if v is None or v == "":
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def parse_rule(text: str, columns: Sequence[str] | None = None) -> Rule:
    """A Rule from its text (module docstring); a GAError naming the rule when it is wrong or
    names a column that frames.csv does not have."""
    m = _RULE.match(text or "")
    if not m:
        raise GAError(f"{text!r}: not a rule; write COLUMN OP NUMBER [over|for N frames], e.g. "
                      f"\"pg_fraction > 0.10 over 5 frames\"", arg="alert")
    n = int(m.group("n") or 1)
    if n < 1:
        raise GAError(f"{text!r}: the window needs at least 1 frame", arg="alert")
    column = m.group("column")
    if columns is not None and column not in columns:
        import difflib

        close = difflib.get_close_matches(column, list(columns), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else f"; columns: {', '.join(columns)}"
        raise GAError(f"{text!r}: frames.csv has no column {column!r}{hint}", arg="alert")
    return Rule(text.strip(), column, m.group("op"), float(m.group("value")), m.group("how") or "", n)
