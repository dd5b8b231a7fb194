"""Lottery rewinding to early training (Frankle et al., 2020): `SupervisedTask` keeps its baseline's state
after `rewind_fraction` of the training steps, `ChannelPruning.replay` removes the trained model's channels
from it, and the ``lottery`` pruner rewinds the surviving weights to it; trials name where they rewound
(``rewound_to``), the trained baseline included, with why."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from autocompress.compress import ChannelPruning, LotteryPruner, RewindPoint, magnitude_mask
from autocompress.errors import UserError
from autocompress.measure import count_params
from autocompress.runtime import run_trial
from autocompress.runtime._trial import Continuation
from autocompress.space import LayerSetting, Policy
from autocompress.task import EarlyCheckpoint, SupervisedTask, seed_everything
from tests.prune import rewind_tasks
from tests.prune.conftest import RecordingTrainer

MEASURE = {"threads": 1, "warmup": 0, "repeats": 3}
TRAINED, GIVEN, ATTENTION = (f"tests.prune.rewind_tasks:{name}" for name in ("trained", "given", "attention"))
#: 6 epochs of ceil(1078 / 64) = 17 steps; 5 % of them
EARLY = "early (step 5 of 102)"
NO_EARLY = "trained baseline (the task keeps no early checkpoint)"


@pytest.fixture(scope="module", autouse=True)
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder of this module's own, so the tasks train here (and keep their early checkpoints) rather
    than load a baseline cached elsewhere, perhaps before early checkpoints were kept."""
    with pytest.MonkeyPatch.context() as patch:
        path = tmp_path_factory.mktemp("cache")
        patch.setenv("AUTOCOMPRESS_CACHE", str(path))
        yield path


def early_of(task: SupervisedTask) -> EarlyCheckpoint:
    checkpoint = task.early_checkpoint()
    assert checkpoint is not None
    return checkpoint


def cnn_policy(channel_sparsity: float, quantizer: str = "minmax") -> Policy:
    """Half the weights of both convs zeroed by ``lottery``; `channel_sparsity` of the first conv's channels
    removed; 8-bit convs."""
    return Policy.from_mapping(
        {
            "0": LayerSetting(channel_sparsity, 8, weight_sparsity=0.5),
            "3": LayerSetting(0.0, 8, weight_sparsity=0.5),
            "8": LayerSetting(0.0, 32),
        },
        pruner="lottery",
        quantizer=quantizer,
    )


def test_supervised_task_keeps_its_state_after_the_rewind_fraction_of_its_training_steps(fresh_cache: Path) -> None:
    task = rewind_tasks.trained
    baseline, early = task.baseline_model().state_dict(), early_of(task)
    steps = task.finetune_steps(task.train_epochs)
    assert (early.step, early.steps) == (round(0.05 * steps), steps) == (5, 102)
    key = task.cache_key()
    assert {p.name for p in fresh_cache.glob("rewind-cnn-*")} == {f"rewind-cnn-{key}.pt", f"rewind-cnn-{key}-step5.pt"}
    # the recipe run again, watched step by step: the checkpoint is that run's state after step 5
    seed_everything(task.seed)
    model = rewind_tasks.small_cnn()
    initial = {name: t.clone() for name, t in model.state_dict().items()}
    seen: list[dict[str, torch.Tensor]] = []

    def watch() -> None:
        seen.append({name: t.clone() for name, t in model.state_dict().items()})

    dataclasses.replace(task, finetune_lr=task.lr).finetune(model, task.train_epochs, seed=task.seed, on_step=watch)
    assert len(seen) == steps
    assert all(torch.equal(early.state[name], seen[4][name]) for name in initial)
    assert all(torch.equal(baseline[name], seen[-1][name]) for name in initial)
    assert not torch.equal(early.state["0.weight"], initial["0.weight"])
    assert not torch.equal(early.state["0.weight"], baseline["0.weight"])


def test_a_baseline_cached_without_its_early_checkpoint_loads_and_keeps_none(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = rewind_tasks.trained
    baseline = task.baseline_model().state_dict()
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    name = f"rewind-cnn-{task.cache_key()}.pt"
    shutil.copy(fresh_cache / name, tmp_path / name)  # a cache written before early checkpoints were kept
    old = dataclasses.replace(task)
    assert old.early_checkpoint() is None
    assert all(torch.equal(t, baseline[n]) for n, t in old.baseline_model().state_dict().items())
    assert [p.name for p in tmp_path.iterdir()] == [name]  # loaded, not trained again
    # another fraction finds no checkpoint of its step beside the full cache either
    assert dataclasses.replace(task, rewind_fraction=0.1).early_checkpoint() is None
    with pytest.raises(UserError, match="rewind_fraction"):
        dataclasses.replace(task, rewind_fraction=1.0)


def test_lottery_rewinds_the_survivors_to_the_early_checkpoint_every_round() -> None:
    task = rewind_tasks.trained
    model, early = task.baseline_model(), early_of(task)
    trained = {name: t.clone() for name, t in model.state_dict().items()}
    targets = {"0": 0.6, "3": 0.6}
    trainer = RecordingTrainer(task, RewindPoint(early.state, EARLY))
    pruner = LotteryPruner(rounds=3)
    pruner.run(model, targets, trainer, 0.6)
    assert pruner.metrics() == {"rewound_to": EARLY}
    assert len(trainer.starts) == 3
    for round_, start in enumerate(trainer.starts, 1):
        for name in targets:
            weight, kept = start[f"{name}.weight"], start[f"{name}.weight"] != 0
            assert int((~kept).sum()) == round(0.6 * round_ / 3 * weight.numel())
            assert torch.equal(weight[kept], early.state[f"{name}.weight"][kept])  # survivors: early values
            if round_ == 1:  # pruned by the trained magnitudes, not the early ones
                assert torch.equal(kept, magnitude_mask(trained[f"{name}.weight"], 0.2).bool())
        for name in ("1.running_mean", "1.running_var", "8.weight", "8.bias"):  # the whole state is rewound
            assert torch.equal(start[name], early.state[name]), name
    assert not torch.equal(model.get_submodule("8").weight.detach(), early.state["8.weight"])  # then trained


def test_replay_removes_the_channels_apply_removed_from_another_copy_of_the_model() -> None:
    task = rewind_tasks.trained
    model, early = task.baseline_model(), early_of(task)
    trained = {name: t.clone() for name, t in model.state_dict().items()}
    policy = Policy.from_mapping({"0": LayerSetting(0.5, 32), "3": LayerSetting(0.25, 32)})
    pruning = ChannelPruning(model, policy, task.example_input(1))
    other = rewind_tasks.small_cnn()
    other.load_state_dict(early.state)
    with pytest.raises(ValueError, match="apply first"):
        pruning.replay(other)
    pruning.apply()
    pruning.replay(other)
    pruned, replayed = model.state_dict(), other.state_dict()
    assert {n: t.shape for n, t in replayed.items()} == {n: t.shape for n, t in pruned.items()}
    # the channels each conv kept, found by their trained rows
    kept0 = [index_of(row, trained["0.weight"]) for row in pruned["0.weight"]]
    kept3 = [index_of(row, trained["3.weight"][:, kept0]) for row in pruned["3.weight"]]
    assert (len(kept0), len(kept3)) == (8, 12)
    assert torch.equal(replayed["0.weight"], early.state["0.weight"][kept0])
    assert torch.equal(replayed["1.running_var"], early.state["1.running_var"][kept0])
    assert torch.equal(replayed["3.weight"], early.state["3.weight"][kept3][:, kept0])
    columns = torch.arange(16 * 16).view(16, 16)[kept3].flatten()  # Flatten: 16 positions per channel
    assert torch.equal(replayed["8.weight"], early.state["8.weight"][:, columns])


def index_of(row: torch.Tensor, rows: torch.Tensor) -> int:
    """The index of the one row of `rows` equal to `row`."""
    (index,) = (rows == row).flatten(1).all(1).nonzero().flatten().tolist()
    return int(index)


@pytest.mark.parametrize("quantizer", ["minmax", "qat"])
def test_lottery_trial_rewinds_to_the_early_checkpoint_through_channel_pruning(quantizer: str) -> None:
    task = rewind_tasks.trained
    result = run_trial(TRAINED, cnn_policy(0.5, quantizer), 3.0, measure=MEASURE)
    metrics = result.metrics
    assert metrics["rewound_to"] == EARLY
    # 8 of the first conv's 16 channels gone: its 8 * 9 weights, 8 * 2 BN parameters, 16 * 8 * 9 of the second's
    assert metrics["params"] == count_params(task.baseline_model()) - 72 - 16 - 1152
    expected = (36 + 576) / (72 + 1152 + 2560)  # half of each pruned conv's weights, the classifier dense
    assert expected - 0.002 <= metrics["weight_sparsity"] <= expected + 0.02  # int8 rounding may add zeros
    assert metrics["accuracy"] > 0.5  # chance is 0.1; the early state alone scores about 0.6


def test_lottery_trial_names_the_trained_baseline_and_why_when_there_is_no_early_checkpoint() -> None:
    assert run_trial(GIVEN, cnn_policy(0.0), 0.3, measure=MEASURE).metrics["rewound_to"] == NO_EARLY
    heads = Policy.from_mapping(
        {"2.self_attn.out_proj": LayerSetting(0.5, 32), "2.linear1": LayerSetting(0.0, 32, weight_sparsity=0.5)},
        pruner="lottery",
    )
    assert run_trial(ATTENTION, heads, 0.3, measure=MEASURE).metrics["rewound_to"] == (
        "trained baseline (the early checkpoint cannot be pruned the same way: attention heads or FFN width "
        "removed through the model's own modules keep no history to replay)"
    )
    parent = run_trial(TRAINED, cnn_policy(0.5), 0.3, measure=MEASURE, keep_weights=True)
    continued = run_trial(
        TRAINED, cnn_policy(0.5), 0.6, measure=MEASURE, continue_from=Continuation(0.3, parent.weights)
    ).metrics
    assert (continued["parent_weights"], continued["rewound_to"]) == (
        "loaded",
        "the parent trial's weights (a continued trial goes on from them)",
    )


def test_lottery_trained_rewinds_to_the_trained_weights_even_where_the_task_kept_an_early_checkpoint() -> None:
    policy = dataclasses.replace(cnn_policy(0.0), pruner="lottery_trained")
    early = run_trial(TRAINED, cnn_policy(0.0), 0.3, measure=MEASURE).metrics
    trained = run_trial(TRAINED, policy, 0.3, measure=MEASURE).metrics
    assert early["rewound_to"].startswith("early (step ")
    assert trained["rewound_to"] == "the weights the trial started from (pruner lottery_trained)"
    assert trained["accuracy"] != early["accuracy"]


def test_level_pruner_records_no_rewind() -> None:
    policy = dataclasses.replace(cnn_policy(0.0), pruner="level")
    assert "rewound_to" not in run_trial(TRAINED, policy, 0.3, measure=MEASURE).metrics
