"""The trainer's training state: saved at step boundaries, loaded with weights_only=True, resumed exactly."""

import io
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from attnzoo.training.trainer import Budget, Trainer

STEPS_PER_EPOCH = 5
EPOCHS = 3  # 15 steps


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])


def _batches(x, y, kill_at=None, counter=None):
    """Batches in an order drawn from (seed, epoch), as the tasks draw theirs."""

    def batches(epoch):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1000 + epoch))
        for i in range(STEPS_PER_EPOCH):
            if kill_at is not None:
                counter[0] += 1
                if counter[0] == kill_at[0]:
                    os.kill(os.getpid(), kill_at[1])
            idx = order[i * 8:(i + 1) * 8]
            yield x[idx], y[idx]

    return batches


def _loss(m, b):
    # every generator a run draws from: torch (dropout), Python and NumPy (noise on the inputs)
    noise = random.gauss(0, 0.01) + float(np.random.normal(0, 0.01))
    return ((m(b[0] + noise).squeeze(1) - b[1]) ** 2).mean(), len(b[0])


def _model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.2), nn.ReLU(), nn.Linear(16, 1))


def _round_trip(state):
    """As the file does: torch.save, then torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _run(seed=0, resume=None, kill_at=None, every_steps=1, minutes=None):
    x, y = _data()
    model = _model(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    states = []

    def evaluate(m):
        with torch.no_grad():
            return {"mse": float(((m(x).squeeze(1) - y) ** 2).mean())}

    budget = Budget(minutes=minutes) if minutes else Budget(epochs=EPOCHS)
    tr = Trainer(model, lr=0.02, budget=budget, evaluate=evaluate, primary="mse", progress=False,
                 eval_every_minutes=1e6, on_checkpoint=lambda s: states.append(_round_trip(s)),
                 checkpoint_every_steps=every_steps, checkpoint_every_minutes=1e6)
    res = tr.fit(_batches(x, y, kill_at, [0]), STEPS_PER_EPOCH, _loss, resume=resume)
    return model, res, states


def _untimed(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def uninterrupted():
    return _run()


@pytest.mark.parametrize("at", [3, 5, 7, 10, 14, 15])  # inside an epoch, at its end, the last steps
def test_a_run_resumed_from_any_step_ends_with_the_same_weights(uninterrupted, at):
    model, res, states = uninterrupted
    assert res.steps == 15 and [s["step"] for s in states[:3]] == [1, 2, 3]
    state = next(s for s in states if s["step"] == at)  # the checkpoint a killed run left behind
    # a fresh process: other initial weights and random states, all replaced by the saved ones
    model2, res2, states2 = _run(seed=123, resume=state)
    _same(model.state_dict(), model2.state_dict())  # the best weights, loaded back at the end
    _same(states[-1]["model"], states2[-1]["model"])  # the last weights
    _same(states[-1]["optimizer"]["state"][0], states2[-1]["optimizer"]["state"][0])
    assert res2.steps == 15 and res2.resumed_from == at and _untimed(res2.records) == _untimed(res.records)
    assert [r["step"] for r in res2.records] == [15] and states2[-1]["finished"]


def test_the_state_holds_position_schedule_and_random_states(uninterrupted):
    _, res, states = uninterrupted
    s = next(s for s in states if s["step"] == 7)
    assert (s["epoch"], s["epoch_step"], s["finished"]) == (1, 2, False)
    assert isinstance(s["rng"]["torch"], torch.Tensor) and len(s["rng"]["python"][1]) == 625
    assert s["optimizer"]["param_groups"][0]["lr"] > 0 and s["records"] == []
    # the end: saved before the final evaluation (a kill there loses no training), then finished with it
    assert [(x["step"], x["finished"], len(x["records"])) for x in states[-2:]] == [(15, False, 0), (15, True, 1)]


def test_resuming_a_finished_state_trains_nothing(uninterrupted):
    model, res, states = uninterrupted
    model2, res2, states2 = _run(seed=5, resume=states[-1])
    _same(model.state_dict(), model2.state_dict())
    assert res2.steps == 15 and _untimed(res2.records) == _untimed(res.records) and states2 == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_stop_at_a_step_boundary_save_and_resume_exactly(uninterrupted, sig):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    model, res, states = uninterrupted
    # the signal arrives while batch 8 is drawn: step 8 is finished, then the run stops and saves
    _, res1, states1 = _run(kill_at=(8, sig), every_steps=None)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before  # handlers restored
    assert res1.interrupted and res1.stopped_by == sig.name and res1.steps == 8
    assert [(s["step"], s["finished"]) for s in states1] == [(8, False), (8, False)]
    assert len(states1[-1]["records"]) == 1  # evaluated as Ctrl-C always did
    model2, res2, _ = _run(seed=9, resume=states1[-1], every_steps=None)
    assert res2.steps == 15 and not res2.interrupted
    assert [r["step"] for r in res2.records] == [8, 15]
    _same(states[-1]["model"], _run(seed=9, resume=states1[-1])[2][-1]["model"])


def test_a_minutes_budget_continues_with_the_seconds_left():
    _, _, states = _run(minutes=1e-3, every_steps=1)  # 0.06 s: a few steps at most
    s = dict(states[0], elapsed=10.0)  # as if killed after 10 s of a 0.06 s budget
    _, res, _ = _run(minutes=1e-3, resume=s)
    assert res.steps == s["step"] and res.train_seconds >= 10.0  # nothing left to train: evaluated only


def test_a_state_of_another_data_size_or_version_is_refused(uninterrupted):
    state = uninterrupted[2][3]
    with pytest.raises(ValueError, match="6 steps per epoch, now 5"):
        _run(resume=dict(state, steps_per_epoch=6))
    with pytest.raises(ValueError, match="version 99"):
        _run(resume=dict(state, state_version=99))
