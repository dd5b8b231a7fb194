"""The task adapters with real models and real data (scikit-learn digits through torch DataLoaders): a trained
two-input model from a factory and a checkpoint file, dict batches, the generic function adapter, the rules
they keep (no retraining, on_step per optimiser step, any callable model) and a search through each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import autocompress
from autocompress.deploy import Artefact, get_runtime
from autocompress.errors import UserError
from autocompress.measure import count_params, to_torchscript
from autocompress.task import SupervisedTask
from tests import adapter_tasks
from tests.adapter_tasks import DATA, TwoHalves, mlp, train_two_halves

SPACE = """
task: {task}
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.5}}
fidelity: {{finetune_epochs: [0.5]}}
defaults: {{channel_sparsity: [0.5], weight_bits: [8]}}
measure: {{threads: 1, repeats: 3, warmup: 1}}
"""


@pytest.fixture(scope="module")
def trained_two_halves(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("user") / "two_halves.pt"
    train_two_halves(path)
    return path


@pytest.fixture
def checkpoint(trained_two_halves: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the user's checkpoint file for one test (which may replace it)."""
    path = tmp_path / "two_halves.pt"
    path.write_bytes(trained_two_halves.read_bytes())
    monkeypatch.setenv("ADAPTER_CHECKPOINT", str(path))
    return path


def same_weights(a: nn.Module, b: dict[str, torch.Tensor]) -> bool:
    state = a.state_dict()
    return state.keys() == b.keys() and all(torch.equal(state[k], b[k]) for k in b)


def test_classification_task_keeps_the_rules_of_the_protocol(checkpoint: Path) -> None:
    task = adapter_tasks.two_halves()
    saved = torch.load(checkpoint, weights_only=True)
    model = task.baseline_model()
    assert same_weights(model, saved)  # the user's trained weights, not retrained

    top, bottom = task.example_input(3)  # a real validation batch, one tensor per input
    x_val = DATA["val"][0]
    assert torch.equal(top, x_val[:3, :, :8]) and torch.equal(bottom, x_val[:3, :, 8:])
    assert [t.shape[0] for t in task.example_input(100)] == [100, 100]  # repeated past the pool

    accuracy = task.evaluate(model, "val")
    assert accuracy > 0.85
    script = to_torchscript(model, task.example_input(1))
    assert task.evaluate(script, "val") == pytest.approx(accuracy, abs=1e-6)  # any callable model
    y_test = DATA["test"][1]
    logits = model(DATA["test"][0][:, :, :8], DATA["test"][0][:, :, 8:])
    assert task.evaluate(model, "test") == pytest.approx(float((logits.argmax(1) == y_test).float().mean()))

    steps: list[int] = []
    task.finetune(model, 0.5, seed=1, on_step=lambda: steps.append(1))
    batches = len(task.train)  # type: ignore[arg-type]
    assert len(steps) == task.finetune_steps(0.5) == round(0.5 * batches) > 0
    assert not same_weights(model, saved) and task.evaluate(model, "val") > 0.8
    assert task.finetune_steps(0) == 0
    task.finetune(model, 0, on_step=lambda: steps.append(1))
    assert len(steps) == round(0.5 * batches)  # no step for zero epochs

    replaced = {k: torch.zeros_like(v) if k.startswith("head") else v for k, v in saved.items()}
    torch.save(replaced, checkpoint)
    assert same_weights(task.baseline_model(), replaced)  # a replaced checkpoint is read, never reused


@pytest.mark.slow
def test_two_input_model_with_dict_batches_searches_and_exports(checkpoint: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(task="tests.adapter_tasks:two_halves"))
    study = autocompress.search(
        space, study="two", storage=f"sqlite:///{tmp_path / 's.db'}", trials=2, executor="inline"
    )
    trials = study.trials()
    assert [t.state for t in trials] == ["complete", "complete"], [t.error for t in trials]
    layers = trials[0].policy["layers"]
    assert {"top.0", "bottom.0", "top.3", "bottom.3"} <= set(layers)  # both branches found and pruned
    baseline_params = count_params(TwoHalves())
    for trial in trials:
        assert trial.metrics["params"] < 0.6 * baseline_params  # half the channels physically gone
        assert trial.metrics["accuracy"] > 0.5
    out = tmp_path / "export"
    study.export(out, trial=0)  # int8 with two inputs on its fastest runtime, re-evaluated in a fresh process
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verified"]["accuracy"] == pytest.approx(trials[0].metrics["accuracy"], abs=0.005)
    runtime = manifest["artefact"]["runtime"]
    files = {f["file"]: (out / f["file"]).read_bytes() for f in manifest["artefact"]["files"]}
    reloaded = get_runtime(runtime).load(Artefact(runtime, files))
    assert reloaded(*adapter_tasks.two_halves().example_input(4)).shape == (4, 10)


@pytest.fixture
def mlp_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's trained digits MLP, saved as a state dict."""
    torch.manual_seed(0)
    model = mlp()
    x, y = DATA["train"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    path = tmp_path / "mlp.pt"
    torch.save(model.state_dict(), path)
    monkeypatch.setenv("ADAPTER_CHECKPOINT", str(path))
    return path


@pytest.mark.slow
def test_function_task_searches_and_a_non_number_metric_is_named(mlp_checkpoint: Path, tmp_path: Path) -> None:
    task = adapter_tasks.functions()
    steps: list[int] = []
    model = task.baseline_model()
    assert task.evaluate(model, "val") > 0.9
    task.finetune(model, 1.0, on_step=lambda: steps.append(1))
    assert len(steps) == task.finetune_steps(1.0) == -(-len(DATA["train"][1]) // 64)

    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(task="tests.adapter_tasks:functions"))
    study = autocompress.search(
        space, study="fn", storage=f"sqlite:///{tmp_path / 's.db'}", trials=1, executor="inline"
    )
    (trial,) = study.trials()
    assert trial.state == "complete" and trial.metrics["accuracy"] > 0.8, trial.error

    space.write_text(SPACE.format(task="tests.adapter_tasks:non_number"))
    with pytest.raises(
        UserError, match=r"evaluate\(model, 'val'\).*returned \{'accuracy'.*must return a finite number"
    ):
        autocompress.search(space, study="bad", storage=f"sqlite:///{tmp_path / 's.db'}", trials=1, executor="inline")
    assert autocompress.load_study("fn", f"sqlite:///{tmp_path / 's.db'}").name == "fn"


def test_supervised_task_untrained_and_keyed_by_the_checkpoint(
    mlp_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))

    def from_checkpoint() -> nn.Module:
        model = mlp()
        model.load_state_dict(torch.load(mlp_checkpoint, weights_only=True))
        return model

    saved = torch.load(mlp_checkpoint, weights_only=True)
    pretrained = SupervisedTask(name="pre", model_factory=from_checkpoint, data=DATA, train_epochs=0)
    assert same_weights(pretrained.baseline_model(), saved)  # train_epochs=0: not a single step
    assert pretrained.finetune_steps(0) == 0

    trained = SupervisedTask(name="tuned", model_factory=from_checkpoint, data=DATA, train_epochs=1)
    key, first = trained.cache_key(), trained.baseline_model().state_dict()
    torch.save({k: v * 0.5 for k, v in saved.items()}, mlp_checkpoint)
    again = SupervisedTask(name="tuned", model_factory=from_checkpoint, data=DATA, train_epochs=1)
    assert again.cache_key() != key  # the replaced file is part of the key: retrained, not reused
    assert not same_weights(again.baseline_model(), first)
