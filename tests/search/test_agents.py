"""The agent strategies (`amc`, `haq`) and `autocompress`: budgets are always met by construction, the MACs
estimate they steer by matches the really pruned model, the agent learns from rewards, and its weights
round-trip as safetensors referenced by sha256. Real models from experiments/, synthetic outcomes."""

from __future__ import annotations

import hashlib
import json

import pytest

from autocompress.compress import CRITERIA, prune
from autocompress.errors import UserError
from autocompress.measure import count_macs
from autocompress.space import Space, discover_layers, parse_space, resolve_space
from autocompress.strategies import AMCController, HAQController, Outcome, make_controller
from autocompress.strategies._ddpg import estimate_macs
from experiments.tasks import cnn as tasks
from tests.conftest import with_measured_table

SPACE = """task: experiments.tasks.cnn:{model}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}}
"""
MODELS = ("resnet", "mobilenet", "densenet")


@pytest.fixture(scope="module")
def spaces() -> dict[str, tuple[Space, object]]:
    out = {}
    for model in MODELS:
        task = getattr(tasks, model)
        net = task.model_factory().eval()
        out[model] = (
            resolve_space(parse_space(SPACE.format(model=model)), discover_layers(net, task.example_input(1))),
            task,
        )
    return out


def with_strategy(space: Space, name: str, **options) -> Space:
    return Space.from_dict({**space.to_dict(), "strategy_options": {name: options}})


def synthetic(proposal, favoured: str | None = None) -> Outcome:
    """Accuracy falls with overall sparsity; keeping `favoured` dense is worth a lot."""
    layers = proposal.policy.layers
    sparsity = sum(s.channel_sparsity for _, s in layers) / len(layers)
    accuracy = 0.9 - 0.3 * sparsity - (0.3 * proposal.policy[favoured].channel_sparsity if favoured else 0.0)
    return Outcome("complete", {"accuracy": accuracy, "speedup": 1 + sparsity, "latency_ms": 1 / (1 + sparsity)})


def test_space_carries_layer_facts_through_json(spaces) -> None:
    space, _ = spaces["mobilenet"]
    info = space.layer_info["blocks.1.depthwise.0"]
    assert (info["kernel"], info["stride"], info["in_channels"], info["out_channels"]) == (3, 2, 64, 64)
    assert space.layer_info["blocks.1.expand.0"]["out_root"] == "blocks.1.depthwise.0"  # coupled to the dw root
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))).layer_info == space.layer_info


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_macs_estimate_matches_the_pruned_model(spaces, model) -> None:
    space, task = spaces[model]
    controller = make_controller("amc", space, 0)
    x = task.example_input(1)
    for _ in range(2):
        policy = controller.ask().policy
        real = sum(count_macs(prune(task.model_factory().eval(), policy, x), x).values())
        assert controller.estimated_macs(policy) == pytest.approx(real, rel=0.03)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("target", [0.3, 0.6])
def test_amc_clipping_always_meets_the_macs_target(spaces, model, target) -> None:
    space = with_strategy(spaces[model][0], "amc", target_macs=target, warmup_episodes=3)
    controller = make_controller("amc", space, 1)
    total = estimate_macs(space, {})
    for _ in range(12):
        proposal = controller.ask()
        assert space.contains(proposal.policy)
        assert controller.estimated_macs(proposal.policy) <= target * total * (1 + 1e-9)
        controller.tell(proposal.number, synthetic(proposal))
    assert len({tuple(actions) for actions, _ in controller.history}) > 3  # a search, not one forced policy


def test_amc_agent_learns_to_keep_the_layer_that_matters(spaces) -> None:
    space = with_strategy(spaces["resnet"][0], "amc", target_macs=0.7, warmup_episodes=10, noise=0.2)
    controller = make_controller("amc", space, 0)
    favoured = "layer1.0.conv1"
    for _ in range(60):
        proposal = controller.ask()
        controller.tell(proposal.number, synthetic(proposal, favoured))
    index = controller.layers.index(favoured)
    warm = [actions[index] for actions, _ in controller.history[:10]]
    late = [actions[index] for actions, _ in controller.history[-15:]]
    rewards = [reward for _, reward in controller.history]
    assert sum(late) / len(late) > sum(warm) / len(warm) + 0.15  # keeps more of the layer that matters
    assert sum(rewards[-15:]) / 15 > sum(rewards[:10]) / 10


def test_amc_fast_evaluation_without_finetune(spaces) -> None:
    controller = make_controller("amc", with_strategy(spaces["resnet"][0], "amc", finetune_epochs=0), 0)
    assert controller.ask().finetune_epochs == 0


def test_agent_weights_round_trip_as_safetensors_by_sha256(spaces) -> None:
    space = with_strategy(spaces["resnet"][0], "amc", warmup_episodes=2)
    original = make_controller("amc", space, 5)
    for _ in range(6):
        proposal = original.ask()
        original.tell(proposal.number, synthetic(proposal))
    data = original.agent.save_weights()  # the state names the weights by sha256; they are not stored
    assert hashlib.sha256(data).hexdigest() == original.state_dict()["agent"]["sha256"]
    assert data[8:9] == b"{"  # safetensors: an 8-byte header length, then a JSON header (no pickle)
    fresh = make_controller("amc", space, 5)
    assert fresh.agent.save_weights() != data
    fresh.agent.load_weights(data)
    assert fresh.agent.save_weights() == data
    state = [0.5] * AMCController.state_dim
    assert fresh.agent.act(state) == original.agent.act(state)


def test_resume_refuses_a_replay_that_does_not_reproduce_the_weights(spaces) -> None:
    space = with_strategy(spaces["resnet"][0], "amc", warmup_episodes=2)
    original = make_controller("amc", space, 5)
    for _ in range(4):
        proposal = original.ask()
        original.tell(proposal.number, synthetic(proposal))
    state = json.loads(json.dumps(original.state_dict()))
    state["agent"]["sha256"] = "0" * 64
    with pytest.raises(RuntimeError, match="did not reproduce"):
        make_controller("amc", space, 5).load_state_dict(state)


@pytest.mark.parametrize("model", ["resnet", "mobilenet"])
def test_haq_lowers_bits_until_the_measured_latency_budget_fits(spaces, model) -> None:
    """With the model's measured table (ONNX Runtime): every episode meets the budget, or no layer's lower
    bit-width would cut its predicted latency any further (HAQ's repair stops there)."""
    space = with_measured_table(with_strategy(spaces[model][0], "haq", target_speedup=1.2, warmup_episodes=3))
    controller = make_controller("haq", space, 2)
    assert isinstance(controller, HAQController)
    bit_mixes = set()
    for _ in range(12):
        proposal = controller.ask()
        bits = {n: s.weight_bits for n, s in proposal.policy}
        latency = controller.estimated_latency(bits)
        lower = [{**bits, n: 8} for n in controller.layers if bits[n] == 32]
        assert latency <= 1 / 1.2 or all(controller.estimated_latency(b) >= latency for b in lower)
        assert all(s.channel_sparsity == 0 for _, s in proposal.policy)
        bit_mixes.add(tuple(sorted(bits.items())))
        controller.tell(proposal.number, synthetic(proposal))
    assert len(bit_mixes) > 1  # a real search over mixes, not one fixed mix


def test_bad_agent_knobs_are_user_errors(spaces) -> None:
    with pytest.raises(UserError, match="strategy.amc.weight_bits"):
        make_controller("amc", with_strategy(spaces["resnet"][0], "amc", weight_bits="mid"), 0)
    with pytest.raises(UserError, match="strategy.haq.warmup"):
        make_controller("haq", with_strategy(spaces["resnet"][0], "haq", warmup=3), 0)
    with pytest.raises(UserError, match=r"strategy.amc.warmup_episodes: 2.5 is not a whole number"):
        make_controller("amc", with_strategy(spaces["resnet"][0], "amc", warmup_episodes=2.5), 0)
    with pytest.raises(UserError, match=r"strategy.anneal.cooling: 'fast' is not a number"):
        make_controller("anneal", with_strategy(spaces["resnet"][0], "anneal", cooling="fast"), 0)
    controller = make_controller("amc", with_strategy(spaces["resnet"][0], "amc", warmup_episodes=3.0), 0)
    assert controller.options["warmup_episodes"] == 3 and isinstance(controller.options["warmup_episodes"], int)


def test_autocompress_anneals_sparsity_and_asks_for_admm_pruning(spaces) -> None:
    space = spaces["resnet"][0]
    controller = make_controller("autocompress", space, 0)
    proposals = []
    for _ in range(10):
        proposals.append(controller.ask())
        controller.tell(proposals[-1].number, synthetic(proposals[-1]))
    assert all(s.weight_bits == 8 for p in proposals for _, s in p.policy)
    assert len({p.policy for p in proposals}) > 5
    assert "admm" in CRITERIA and all(p.policy.criterion == "admm" for p in proposals)
