"""Checkpoints are atomic and safe to load; the trainer keeps the best weights and survives Ctrl-C."""


import pytest
import torch
from torch import nn

from attnzoo.training.checkpoint import RunDirError, load_run, save_checkpoint, write_json
from attnzoo.training.trainer import Budget, Trainer


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})

    class Boom(dict):
        def __reduce_ex__(self, protocol):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"model": Boom()})
    ckpt = torch.load(path, weights_only=True)
    assert torch.equal(ckpt["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_load_run_refuses_foreign_and_truncated_files(tmp_path):
    write_json(tmp_path / "config.json", {"format_version": 1, "task": "g2p"})
    save_checkpoint(tmp_path / "checkpoint.pt", {"model": {}})
    config, ckpt = load_run(tmp_path)
    assert config["task"] == "g2p" and ckpt["format_version"] == 1
    data = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(RunDirError, match="cannot be read"):
        load_run(tmp_path)
    torch.save({"model": {}}, tmp_path / "checkpoint.pt")  # no format_version
    with pytest.raises(RunDirError, match="no format_version"):
        load_run(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(RunDirError, match="config.json is missing"):
        load_run(tmp_path)


def test_code_in_a_checkpoint_is_never_run(tmp_path):
    write_json(tmp_path / "config.json", {"format_version": 1})

    class Evil:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    torch.save({"format_version": 1, "x": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunDirError):
        load_run(tmp_path)
    assert not (tmp_path / "pwned").exists()


def _regression():
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1
    return x, y


def test_trainer_fits_keeps_best_and_follows_the_budget():
    x, y = _regression()
    model = nn.Linear(4, 1)
    calls = []

    def evaluate(m):
        with torch.no_grad():
            mse = float(((m(x).squeeze(1) - y) ** 2).mean())
        calls.append(mse)
        return {"mse": mse}

    def batches(epoch):
        for i in range(0, 256, 32):
            yield x[i:i + 32], y[i:i + 32]

    def loss_fn(m, b):
        return ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(), len(b[0])

    tr = Trainer(model, lr=0.05, budget=Budget(epochs=30), evaluate=evaluate, primary="mse", progress=False)
    res = tr.fit(batches, steps_per_epoch=8, loss_fn=loss_fn)
    assert res.steps == 240 and not res.interrupted
    assert res.best["mse"] == min(calls) < 0.01
    assert res.items == 240 * 32 and res.unit == "items" and res.items_per_second > 0  # throughput for metrics.json
    from attnzoo.training.run import run_metrics
    assert run_metrics(res)["train_items_per_second"] == round(res.items_per_second, 1)
    assert tr.lr_at(0.0) == 0.0 and tr.lr_at(1.0) == pytest.approx(0.05 * 0.05)


def test_ctrl_c_still_evaluates_and_returns_what_was_trained():
    x, y = _regression()
    model = nn.Linear(4, 1)

    def batches(epoch):
        for i in range(0, 256, 32):
            if epoch == 2 and i == 64:
                raise KeyboardInterrupt
            yield x[i:i + 32], y[i:i + 32]

    def loss_fn(m, b):
        return ((m(b[0]).squeeze(1) - b[1]) ** 2).mean(), len(b[0])

    tr = Trainer(model, lr=0.05, budget=Budget(epochs=100), evaluate=lambda m: {"mse": 1.0}, primary="mse",
                 progress=False)
    res = tr.fit(batches, steps_per_epoch=8, loss_fn=loss_fn)
    assert res.interrupted and res.steps == 18 and len(res.records) == 1


def test_nan_loss_stops_with_a_clear_error():
    model = nn.Linear(1, 1)
    tr = Trainer(model, lr=0.1, budget=Budget(epochs=1), evaluate=lambda m: {"l": 0.0}, primary="l", progress=False)
    with pytest.raises(FloatingPointError, match="lower --lr"):
        tr.fit(lambda e: iter([None]), 1, lambda m, b: (torch.tensor(float("nan")), 1))


@pytest.mark.parametrize("kw", [dict(), dict(minutes=0), dict(epochs=-1)])
def test_budget_must_be_positive(kw):
    with pytest.raises(ValueError):
        Budget(**kw)
