"""Log lines for machines and for terminals from the same ``key=value`` log calls.

Every log call in the recorder is written as ``log.warning("event=gap conn=%s missing=%d", …)``:
readable as it is on a terminal (``log.format = "text"``). For ``log.format = "json"`` each
line becomes one JSON object whose fields are real keys with typed values — ``{"event": "gap",
"conn": "3", "missing": 12, …}`` — so a log pipeline can alert on ``event`` and ``level``
without parsing strings.

Why the keys come from the call's template, not from the rendered text: the template says
exactly which argument belongs to which key (``error=%r`` of a message containing spaces and
``=`` stays one value), and the argument keeps its type (an int stays a number, a list a list).
A message that is not ``key=value`` throughout (free text from a library) keeps its rendered
text under ``msg``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

_PLACEHOLDER = re.compile(r"%(?:\(\w+\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)=(.*)", re.S)
_INT = re.compile(r"-?\d+")
_FLOAT = re.compile(r"-?(?:\d+\.\d*|\.\d+)(?:[eE][-+]?\d+)?|-?\d+[eE][-+]?\d+")
RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})


def _scalar(text: str) -> object:
    """A bare value from rendered text: int, float or the string itself."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _typed(spec: str, arg: object) -> object:
    """The value of one ``key=%x`` argument, keeping its type where JSON has one."""
    conv = spec[-1]
    if conv in "di" and isinstance(arg, int):
        return int(arg)
    if conv in "eEfFgG" and isinstance(arg, (int, float)):
        return float(spec % arg)  # the precision the call asked for
    if isinstance(arg, bool | int | float | str) or arg is None:
        return arg
    if isinstance(arg, list | tuple) and all(isinstance(x, str | int | float) for x in arg):
        return list(arg)
    return spec % (arg,)


def fields_of(record: logging.LogRecord) -> tuple[dict[str, object], str | None]:
    """(fields, free text or None) of a log record; see the module docstring."""
    template, args = record.msg, record.args
    if isinstance(template, str) and isinstance(args, tuple):
        parsed = _from_template(template, args)
        if parsed is not None:
            return parsed
    return _from_text(record.getMessage())


def _from_template(template: str, args: tuple[Any, ...]
                   ) -> tuple[dict[str, object], str | None] | None:
    out: dict[str, object] = {}
    rest: list[str] = []
    used = 0
    for token in template.split():
        specs = [m.group() for m in _PLACEHOLDER.finditer(token) if m.group() != "%%"]
        mine = args[used:used + len(specs)]
        if len(mine) != len(specs):
            return None
        used += len(specs)
        m = _FIELD.fullmatch(token)
        if m is None:
            rest.append(token % mine if specs else token.replace("%%", "%"))
            continue
        key, value = m.groups()
        if len(specs) == 1 and value == specs[0]:
            out[key] = _typed(value, mine[0])
        else:
            out[key] = _scalar(value % mine if specs else value.replace("%%", "%"))
    if used != len(args):
        return None
    if rest:
        more, text = _from_text(" ".join(rest))
        if text is not None:  # free text: keep the whole line readable, and the fields found
            return out, template % args if args else template
        out.update(more)
    return out, None


def _from_text(text: str) -> tuple[dict[str, object], str | None]:
    """``k=v k=v`` without spaces in values (a pre-rendered line such as the status line);
    anything else is free text."""
    out: dict[str, object] = {}
    for token in text.split():
        m = _FIELD.fullmatch(token)
        if m is None:
            return {}, text
        out[m.group(1)] = _scalar(m.group(2))
    return (out, None) if out else ({}, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, [worker], the call's fields, [msg], [exc]."""

    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name,
        }
        if self.worker is not None:
            out["worker"] = self.worker
        try:
            found, text = fields_of(record)
        except (TypeError, ValueError):  # a malformed call: never lose the line
            found, text = {}, str(record.msg)
        for key, value in found.items():
            taken = key in RESERVED or (key == "worker" and self.worker is not None)
            out[f"{key}_" if taken else key] = value
        if text is not None:
            out["msg"] = text
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


__all__ = ["JsonFormatter", "fields_of"]
