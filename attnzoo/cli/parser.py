"""What every command's parser shares: one-line usage errors, flags derived from a task's config, range checks.

A config field made with :func:`~attnzoo.training.options.option` becomes a
flag (its ``Flag`` gives the name, help, example and bounds). Flags default to
None ("not given"), so the config's own default applies and a resumed run can
tell a flag given from one left out.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any

from ..training.options import Flag, flags_of


class UsageError(ValueError):
    """A command line argparse cannot parse (unknown command, task or flag, a value of the wrong type)."""


#: flag -> the commands (e.g. "train seq2seq") that take it: filled as the parsers are built, for the hint
#: that names where a misplaced flag belongs
FLAG_OWNERS: dict[str, list[str]] = {}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with the closest choice) instead of the usage block."""

    #: the command and task being parsed ("train g2p"), for the hint on a flag that belongs to another task
    #: (argparse reports a subparser's unknown flags from the top parser)
    command_words = ""

    def error(self, message: str):
        hint = ""
        m = re.search(r"invalid choice: '?([^'\s]+)'? \(choose from (.*)\)", message)
        if m:
            close = difflib.get_close_matches(m.group(1), re.findall(r"[\w-]+", m.group(2)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
        m = re.search(r"unrecognized arguments: (--[\w-]+)", message)
        here = Parser.command_words or self.prog.removeprefix("attnzoo ")
        owners = [o for o in FLAG_OWNERS.get(m.group(1), []) if o.split()[0] == here.split()[0]] if m else []
        if owners:
            flag = m.group(1)
            return self._raise(f"{flag} is for {' and '.join(f'`{o}`' for o in owners)}; `attnzoo {here}` does not "
                               f"take it (see `attnzoo {here} --help`)")
        self._raise(f"{message}{hint} (see `{self.prog} --help`)")

    @staticmethod
    def _raise(message: str):
        raise UsageError(message)


def _value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_set(items: list[str] | None) -> dict:
    """--set KEY=VALUE ... -> {key: value} (values read as JSON where they parse, else strings)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (e.g. --set decoder_dim=512), got {item!r}")
        key, val = item.split("=", 1)
        out[key.strip()] = _value(val)
    return out


def _type_of(config_cls: type, name: str) -> type:
    """int, float, str or bool: the type a field's flag parses to (Optional[X] -> X)."""
    hint = typing.get_type_hints(config_cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if args[0] in (int, float, str, bool) else str


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type, owner: str,
                     skip: tuple[str, ...] = ()) -> dict[str, tuple[str, Flag]]:
    """A flag for every option field of ``config_cls`` (``skip``: fields added otherwise); returns
    {field: (flag, Flag)}. ``--minutes`` and ``--epochs`` are mutually exclusive."""
    budget = parser.add_mutually_exclusive_group()
    made = {}
    for name, flag, meta in flags_of(config_cls):
        if name in skip:
            continue
        default = config_cls.__dataclass_fields__[name].default
        kind = _type_of(config_cls, name)
        helptext = argparse.SUPPRESS if meta.hidden else (
            meta.help.replace("%", "%%")  # argparse %-formats help: "90%" would crash --help
            + ("" if default is None or isinstance(default, bool) or name in ("minutes", "epochs")
               else f" (default: {default})"))
        target = budget if name in ("minutes", "epochs") else parser
        if kind is bool:
            target.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            target.add_argument(flag, dest=name, type=kind, default=None, metavar=meta.metavar, help=helptext)
        FLAG_OWNERS.setdefault(flag, [])
        if owner not in FLAG_OWNERS[flag]:
            FLAG_OWNERS[flag].append(owner)
        made[name] = (flag, meta)
    return made


def check_ranges(args: argparse.Namespace, flags: dict[str, tuple[str, Flag]]) -> None:
    """Every numeric flag given in range (and finite), before anything loads."""
    for name, (flag, meta) in flags.items():
        value = getattr(args, name, None)
        if value is not None:
            meta.check(flag, value)


def given(args: argparse.Namespace, flags: dict[str, tuple[str, Flag]]) -> dict[str, Any]:
    """{field: value} of the config flags given on the command line (a FILE made absolute, so a run resumed or
    scored from another directory finds it)."""
    out = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    for name, (_, meta) in flags.items():
        if meta.metavar == "FILE" and out.get(name):
            out[name] = str(Path(out[name]).resolve())
    return out

