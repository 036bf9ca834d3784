"""The lab's tasks: one class per file (see :mod:`attnzoo.tasks.base`), one line each in :data:`TASKS`.

    from attnzoo.tasks import TASKS, register
    TASKS["g2p"]                      # the task object (its module is imported on first use)
    register(MyTask())                # a task of your own: `attnzoo train mytask`, eval, show, compare, load

Every command and :func:`attnzoo.load` find a task through this table; no other
module names a task.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from ..core import validate as V
from .base import Command, Map, Task, Training


class TaskTable(Mapping):
    """name -> Task; a task given as ``"module:Class"`` is imported when first used (the CLI starts fast)."""

    def __init__(self, entries: dict[str, str | Task]):
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> Task:
        entry = self._entries[name]
        if isinstance(entry, str):
            module, cls = entry.split(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), cls)()
        return entry

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get_task(self, name: object, what: str = "task") -> Task:
        """The task called ``name``, or a ValueError that lists the tasks and proposes the closest."""
        V.check_choice(what, name, list(self._entries))
        return self[name]


#: every task of the lab, in the order `attnzoo list --kind tasks` prints them
TASKS = TaskTable({
    "g2p": "attnzoo.tasks.g2p:G2P",
    "lm": "attnzoo.tasks.lm:LanguageModelling",
    "classify": "attnzoo.tasks.classify:Classification",
    "translate": "attnzoo.tasks.translate:Translate",
    "seq2seq": "attnzoo.tasks.seq2seq:Transduction",
    "qa": "attnzoo.tasks.qa:QuestionAnswering",
    "caption": "attnzoo.tasks.caption:Captioning",
})


def register(task: Task) -> Task:
    """Add ``task`` to :data:`TASKS` under ``task.name`` (replacing a task of that name); returns it."""
    if not isinstance(task, Task):
        raise TypeError(f"register() takes a Task instance (a subclass of attnzoo.tasks.Task), "
                        f"got {type(task).__name__}")
    TASKS._entries[task.name] = task
    return task


__all__ = ["TASKS", "Task", "TaskTable", "Training", "Map", "Command", "register"]
