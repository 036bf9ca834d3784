"""Weight averaging in the trainer: the average is the EMA of the weights' path, evaluations score it, the
returned model holds it, and training itself goes on from the raw weights exactly as without averaging."""

import io

import pytest
import torch
from torch import nn

from attnzoo.training.run import TrainOptions
from attnzoo.training.trainer import Budget, Trainer

STEPS = 12


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)


class Tied(nn.Module):
    """Two layers sharing one weight matrix (as tied embeddings are), and a BatchNorm with running statistics."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight
        self.norm = nn.BatchNorm1d(4)
        self.out = nn.Linear(4, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.b(self.norm(self.a(x))))).squeeze(1)


def _run(ema_decay, every_steps=None, resume=None, interrupt_call=None):
    torch.manual_seed(0)
    x, y = _data()
    model = Tied().double()
    seen = []  # the weights each step starts from: after step k, before step k + 1
    states = []

    def loss_fn(m, b):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return ((m(b[0]) - b[1]) ** 2).mean(), len(b[0])

    def batches(epoch):
        for i in range(0, 48, 12):
            yield x[i:i + 12], y[i:i + 12]

    calls = [0]

    def evaluate(m):
        calls[0] += 1
        if calls[0] == interrupt_call:
            raise KeyboardInterrupt  # a second Ctrl-C during this evaluation
        with torch.no_grad():
            return {"mse": float(((m(x) - y) ** 2).mean())}

    def save(s):
        buf = io.BytesIO()
        torch.save(s, buf)
        buf.seek(0)
        states.append(torch.load(buf, weights_only=True))

    tr = Trainer(model, lr=0.05, budget=Budget(epochs=STEPS / 4), evaluate=evaluate, primary="mse",
                 progress=False, eval_every_minutes=1e6, eval_every_steps=every_steps, ema_decay=ema_decay,
                 on_checkpoint=save, checkpoint_every_steps=1, checkpoint_every_minutes=1e6)
    res = tr.fit(batches, 4, loss_fn, resume=resume)
    return model, res, seen, states, evaluate


def _expected_ema(path: list[dict], decay: float) -> dict:
    """ema_0 = w_0, then ema_t = d_t ema_{t-1} + (1 - d_t) w_t with d_t = min(decay, (1 + t) / (10 + t))."""
    ema = {k: v.clone() for k, v in path[0].items() if v.is_floating_point()}
    for t, w in enumerate(path[1:], start=1):
        d = min(decay, (1 + t) / (10 + t))
        ema = {k: d * ema[k] + (1 - d) * w[k] for k in ema}
    return ema


def test_the_average_follows_the_weights_path_and_training_is_unchanged_by_it():
    model0, res0, seen0, states0, _ = _run(0.0)
    model, res, seen, states, evaluate = _run(0.5, every_steps=3)  # decay 0.5: the warm-up term rules early on
    # the raw weights take the same path with or without averaging (each evaluation swaps the average in and out)
    path = seen + [states[-1]["model"]]  # w_0 .. w_12
    assert len(path) == STEPS + 1
    for a, b in zip(seen0 + [states0[-1]["model"]], path):
        for k in a:
            assert torch.equal(a[k], b[k]), k
    expected = _expected_ema(path, 0.5)
    ema = states[-1]["ema"]
    assert set(ema) == {"a.weight", "a.bias", "b.bias", "norm.weight", "norm.bias", "norm.running_mean",
                        "norm.running_var", "out.weight", "out.bias"}  # the tied weight once, no integer counter
    for k in ema:
        torch.testing.assert_close(ema[k], expected[k], rtol=1e-12, atol=1e-12)
    # the model returned holds the best evaluation's weights: an average, never the raw ones
    assert [r["step"] for r in res.records] == [3, 6, 9, 12]
    best = min(res.records, key=lambda r: r["mse"])
    assert res.best == best
    averaged = _expected_ema(path[: best["step"] + 1], 0.5)
    for k, v in averaged.items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-12, atol=1e-12)
    assert model.b.weight is model.a.weight  # still tied


def test_each_record_scores_the_average_and_the_raw_weights():
    model, res, seen, states, evaluate = _run(0.5, every_steps=4)
    path = seen + [states[-1]["model"]]
    for r in res.records:
        probe = Tied().double().eval()
        probe.load_state_dict(path[r["step"]])
        assert r["raw_mse"] == pytest.approx(evaluate(probe)["mse"], rel=1e-12)
        probe.load_state_dict({**path[r["step"]], **_expected_ema(path[: r["step"] + 1], 0.5)})
        assert r["mse"] == pytest.approx(evaluate(probe)["mse"], rel=1e-12)
    assert any(abs(r["mse"] - r["raw_mse"]) > 1e-6 for r in res.records)  # the two differ: a real average


def test_an_interrupt_while_the_average_is_evaluated_saves_the_live_weights_not_the_average():
    model, res, seen, states, _ = _run(0.5, every_steps=3, interrupt_call=2)  # the average's score at step 3
    assert res.stopped_by == "SIGINT" and res.steps == 3
    last = states[-1]  # saved after the interrupt and the final evaluation
    path = seen + [last["model"]]
    assert len(path) == 4
    expected = _expected_ema(path, 0.5)
    for k, v in last["ema"].items():
        torch.testing.assert_close(v, expected[k], rtol=1e-12, atol=1e-12)
    assert not torch.equal(last["model"]["out.weight"], last["ema"]["out.weight"])  # two different tensors
    assert [r["step"] for r in res.records] == [3] and "raw_mse" in res.records[0]


@pytest.mark.parametrize("at", [2, 7])
def test_a_resumed_run_continues_the_average(at):
    model, res, seen, states, _ = _run(0.5, every_steps=3)
    state = next(s for s in states if s["step"] == at)
    model2, res2, _, states2, _ = _run(0.5, every_steps=3, resume=state)
    for k, v in states[-1]["ema"].items():
        assert torch.equal(states2[-1]["ema"][k], v), k
    for k, v in model.state_dict().items():
        assert torch.equal(model2.state_dict()[k], v), k
    assert [(r["step"], r["mse"], r["raw_mse"]) for r in res2.records] == \
        [(r["step"], r["mse"], r["raw_mse"]) for r in res.records]


def test_a_state_saved_without_averaging_starts_the_average_from_its_weights():
    _, _, _, states, _ = _run(0.0)
    state = next(s for s in states if s["step"] == 6)
    assert state["ema"] is None
    _, res, seen, states2, _ = _run(0.5, resume=state)
    path = [state["model"]] + seen[1:] + [states2[-1]["model"]]  # w_6 .. w_12, the average starting at w_6
    ema = dict(path[0])
    for t, w in enumerate(path[1:], start=7):
        d = min(0.5, (1 + t) / (10 + t))
        ema = {k: d * ema[k] + (1 - d) * w[k] if w[k].is_floating_point() else w[k] for k in w}
    for k, v in states2[-1]["ema"].items():
        torch.testing.assert_close(v, ema[k], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_a_decay_outside_zero_one_is_refused_naming_it(decay):
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        Trainer(nn.Linear(2, 1), lr=1e-3, budget=Budget(epochs=1), evaluate=dict, primary="x", ema_decay=decay)
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\).*got"):
        TrainOptions(ema_decay=decay)


def test_averaging_is_off_by_default_and_the_command_line_sets_it():
    from attnzoo import lab
    from attnzoo.cli import build_parser
    from attnzoo.cli.parser import given

    parser, _ = build_parser()
    for argv, decay in ((["--ema", "0.99"], 0.99), ([], 0.0)):
        args = parser.parse_args(["train", "g2p", "--model", "transformer", *argv])
        assert lab.plan("g2p", model="transformer", **given(args, args.config_flags)).config.ema_decay == decay
