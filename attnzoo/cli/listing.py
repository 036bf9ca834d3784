"""``attnzoo list``: every table the library keeps (tasks, models, mechanisms, positions, normalizers,
backends), one or all."""

from __future__ import annotations

from ..core import validate as V

KINDS = ("mechanisms", "tasks", "models", "positions", "normalizers", "backends")

#: what each backend of attend() is for (the names are attnzoo.core.attend.BACKENDS)
BACKEND_NOTES = {
    "auto": "the fastest backend that computes the asked attention exactly (default)",
    "eager": "the reference: materialised scores, float32 softmax; any score, bias, mask and normaliser",
    "sdpa": "PyTorch's fused scaled_dot_product_attention kernels (dot-product scores)",
    "chunked": "online softmax over key blocks, recomputed in backward: memory O(L x block), any score",
    "tiled": "the eager path in query tiles: the weights without the (B, H, L, S) intermediates at once",
}


def add_parsers(sub) -> dict:
    ls = sub.add_parser("list", help="list what the library holds: mechanisms (with family and paper), tasks, "
                        "models, positions, normalizers, backends")
    ls.add_argument("--kind", help=f"only this table: {' | '.join(KINDS)} (default: mechanisms; all: every table)")
    ls.add_argument("--family", help="mechanisms of this family only")
    return {"list": run}


def run(args) -> int:
    kind = args.kind or "mechanisms"
    V.check_choice("kind", kind, KINDS + ("all",))
    if args.family is not None and kind != "mechanisms":
        raise ValueError("--family lists mechanisms; drop --kind or use --kind mechanisms")
    kinds = KINDS if kind == "all" else (kind,)
    blocks = [TABLES[k](args) for k in kinds]
    if len(kinds) > 1:
        blocks = [f"# {k}\n{b}" for k, b in zip(kinds, blocks)]
    print("\n\n".join(blocks))
    return 0


def _columns(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def mechanisms(args) -> str:
    from ..registry import FAMILIES
    from ..registry import mechanisms as infos_of

    if args.family is not None:
        V.check_choice("family", args.family, FAMILIES)
    infos = infos_of(args.family)
    if not infos:
        raise ValueError(f"no mechanism in family {args.family!r}")
    width = max(len(i.name) for i in infos)
    fam = max(len(i.family) for i in infos)
    return "\n".join(f"{i.name:<{width}}  {i.family:<{fam}}  {i.paper}\n{'':<{width}}  {'':<{fam}}  {i.summary}"
                     for i in infos)


def tasks(args) -> str:
    from ..tasks import TASKS

    return _columns([(name, ", ".join(TASKS[name].models), TASKS[name].description) for name in TASKS])


def models(args) -> str:
    from ..tasks import TASKS

    rows = [(name, model, f"--attention {attention}" + (" (default model)" if i == 0 else ""))
            for name in TASKS for i, (model, attention) in enumerate(TASKS[name].models.items())]
    return _columns(rows)


def positions(args) -> str:
    from ..positions import POSITIONS

    return _columns([(name, slot, paper) for name, (slot, paper, _) in POSITIONS.items()])


def normalizers(args) -> str:
    from ..core.normalize import NORMALIZERS

    return _columns([(name, (fn.__doc__ or "").strip().splitlines()[0]) for name, fn in NORMALIZERS.items()])


def backends(args) -> str:
    from ..core.attend import BACKENDS

    return _columns([(name, BACKEND_NOTES.get(name, "")) for name in BACKENDS])


TABLES = {"mechanisms": mechanisms, "tasks": tasks, "models": models, "positions": positions,
          "normalizers": normalizers, "backends": backends}
