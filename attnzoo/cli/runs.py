"""Opening a run directory for a command: every file check of load_run, then whether the command fits its task."""

from __future__ import annotations

from .. import lab
from ..tasks import TASKS
from ..training.checkpoint import RunDirError, article, load_run


def commands_of(task) -> tuple[str, ...]:
    """The commands that take a run of ``task``."""
    return ("eval",) + (("show",) if task.shows else ()) + tuple(c.name for c in task.commands) + ("predict",)


def open_run(run_dir: str, command: str, device: str = "cpu") -> lab.Run:
    """The run in ``run_dir`` loaded, or a RunDirError naming the commands its task takes."""
    loaded = load_run(run_dir)
    task = lab.task_of(loaded[0], run_dir)
    takes = commands_of(task)
    if command not in takes:
        fits = [name for name in TASKS if command in commands_of(TASKS[name])]
        fit = " or ".join(fits)
        raise RunDirError(f"{run_dir} is {article(task.name)} {task.name} run; `attnzoo {command}` needs "
                          f"{article(fit)} {fit} run ({article(task.name)} {task.name} run takes "
                          f"{', '.join(f'`attnzoo {c} DIR`' for c in takes)})")
    config, predictor = task.load(run_dir, device, loaded)
    return lab.Run(task.name, predictor, config, lab.Path(run_dir))
