"""Two contracts of attend() on every backend: no weights unless asked, and float64 stays float64 through every
bias and slope; and the files a run writes get the user's umask, like any file."""

import json
import os
import stat

import pytest
import torch

from attnzoo import attend
from attnzoo.positions import ALiBi, T5RelativeBias
from attnzoo.training.checkpoint import save_checkpoint, write_json

BACKENDS = ["eager", "sdpa", "chunked", "tiled"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_need_weights_false_returns_no_weights_on_any_backend(backend):
    q, k, v = (torch.randn(2, 4, 5, 8) for _ in range(3))
    assert attend(q, k, v, backend=backend, need_weights=False).weights is None
    asked = attend(q, k, v, backend=backend if backend in ("eager", "tiled") else "eager", need_weights=True).weights
    assert asked is not None and asked.shape == (2, 4, 5, 5)


def _t5(heads):
    torch.manual_seed(0)
    mod = T5RelativeBias(heads, num_buckets=8, max_distance=16).double()
    torch.nn.init.normal_(mod.bias.weight)  # a learned bias: values that float32 would round
    return mod


@pytest.mark.parametrize("backend", ["sdpa", "chunked", "tiled"])
@pytest.mark.parametrize("make, heads", [(_t5, 4), (ALiBi, 12), (ALiBi, 16), (ALiBi, 6)],
                         ids=["t5", "alibi-12", "alibi-16", "alibi-6"])
def test_float64_biases_and_slopes_stay_float64_on_the_fused_paths(backend, make, heads):
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, heads, 9, 8, dtype=torch.float64, generator=g) * 3 for _ in range(3))
    mod = make(heads)
    want = attend(q, k, v, score_mod=mod, is_causal=True, backend="eager")
    got = attend(q, k, v, score_mod=mod, is_causal=True, backend=backend)
    assert got.output.dtype == torch.float64
    torch.testing.assert_close(got.output, want.output, rtol=0, atol=1e-12)


def test_files_written_atomically_get_the_users_umask(tmp_path):
    before = os.umask(0o027)
    try:
        write_json(tmp_path / "config.json", {"a": 1})
        save_checkpoint(tmp_path / "checkpoint.pt", {"x": torch.zeros(1)})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"config.json": 0o640, "checkpoint.pt": 0o640, "plain.txt": 0o640}, modes
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
