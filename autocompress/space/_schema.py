"""The space file: its pydantic schema, loading with one-line errors, and resolution against a model.

Validation happens here, at the boundary, so the rest of the system only ever sees a valid `Space`.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from autocompress.errors import UserError
from autocompress.space._constraints import CONSTRAINTS, Constraint
from autocompress.space._latency_table import LatencyTable
from autocompress.space._options import LAYER_OPTIONS, SETTINGS, LayerOption, layer_option_fields

if TYPE_CHECKING:
    from autocompress.space._discover import LayerInfo
from autocompress.space._policy import DEFAULT_PRUNER, DEFAULT_QUANTIZER, LayerSetting, Policy

METRICS = (
    "accuracy",
    "latency_ms",
    "latency_ms_b32",
    "speedup",
    "macs",
    "params",
    "size_bytes",
    "bops",
    "sparse_bytes",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _constraint_field(constraint: Constraint) -> tuple[Any, Any]:
    if constraint.fraction:
        return float | None, Field(None, ge=0, le=1, description=constraint.description)
    return (int if constraint.whole else float) | None, Field(None, gt=0, description=constraint.description)


if TYPE_CHECKING:
    ConstraintsSpec = BaseModel
else:
    ConstraintsSpec = create_model(
        "ConstraintsSpec",
        __base__=_Strict,
        __doc__="Budgets a trial must meet to be feasible, relative to the uncompressed baseline where named so.",
        **{name: _constraint_field(constraint) for name, constraint in CONSTRAINTS.items()},
    )


class FidelitySpec(_Strict):
    """How much each trial fine-tunes; several rungs turn on successive halving (ASHA)."""

    finetune_epochs: list[float] = Field([1.0], min_length=1, description="fine-tune epochs per rung, ascending")
    eta: int = Field(3, ge=2, description="successive-halving reduction factor when there are several rungs")

    @field_validator("finetune_epochs")
    @classmethod
    def _ascending(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value) or value != sorted(value):
            raise ValueError("must be non-negative and ascending, e.g. [1, 3, 9]")
        return value


def _option_field(option: LayerOption) -> tuple[Any, Any]:
    choices = Annotated[list[option.kind] | None, AfterValidator(option.check)]  # type: ignore[name-defined]
    return choices, Field(None, min_length=1, description=option.doc)


if TYPE_CHECKING:
    LayerChoicesSpec = _Strict
else:
    LayerChoicesSpec = create_model(
        "LayerChoicesSpec",
        __base__=_Strict,
        __doc__="The choices searched for a layer; a key left out keeps the value from `defaults`.",
        **{option.name: _option_field(option) for option in LAYER_OPTIONS},
    )


class DefaultsSpec(LayerChoicesSpec):
    """Choices for every discovered layer (layers that cannot be pruned keep channel_sparsity [0.0])."""

    criterion: str = Field(
        "l1",
        description="channel importance used to pick what is pruned: a name of `autocompress.compress.CRITERIA` "
        "(listed below), or one registered with register_criterion",
    )
    round_to: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="keep a multiple of this many channels in each "
        "pruned layer (e.g. 8 for SIMD-friendly widths); attention heads are always whole",
    )
    quantizer: str = Field(
        DEFAULT_QUANTIZER,
        description="how 8-bit and lower layers are quantized: a name of `autocompress.compress.QUANTIZERS` "
        "(listed below), or one registered with register_quantizer",
    )
    per_channel: bool = Field(True, description="per-channel weight scales (else one per tensor)")
    pruner: str = Field(
        DEFAULT_PRUNER,
        description="how weight_sparsity is realised during fine-tuning: a name of `autocompress.compress.PRUNERS` "
        "(listed below), or one registered with register_pruner",
    )


class MeasureSpec(_Strict):
    """How latency is measured: fixed threads, warm-up, median of repeats, interleaved with the baseline."""

    threads: int = Field(1, ge=1, description="torch threads while measuring latency")
    repeats: int = Field(30, ge=3, description="timed runs per batch size; the median is kept")
    warmup: int = Field(5, ge=0, description="untimed runs before timing")
    runtimes: list[str] | None = Field(
        None,
        min_length=1,
        description="deploy targets each trial is lowered to and timed on (openvino, onnxruntime, torchscript); "
        "default: every one installed (checked, and filled in, when a study is created)",
    )


class SpaceFile(_Strict):
    """Top-level schema of a space YAML file."""

    task: str = Field(description="import path of a Task, e.g. experiments.tasks.digits:task")
    objectives: dict[Literal[METRICS], Literal["max", "min"]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: {"accuracy": "max", "latency_ms": "min"},  # type: ignore[arg-type]
        min_length=1,
        description="metrics to optimise, each max or min; the leaderboard ranks feasible trials by Pareto "
        "front, and within a front by the first objective",
    )
    constraints: ConstraintsSpec = Field(ConstraintsSpec(), description="what a feasible trial must meet")
    fidelity: FidelitySpec = Field(FidelitySpec(), description="fine-tuning per trial")
    defaults: DefaultsSpec = Field(
        DefaultsSpec.model_validate({"channel_sparsity": [0.0, 0.25, 0.5], "weight_bits": [8, 32]}),
        description="choices for every layer",
    )
    layers: dict[str, LayerChoicesSpec] = Field(default_factory=dict, description="glob pattern -> choices")
    strategy: dict[str, dict[str, float | int | str]] = Field(
        default_factory=dict,
        description="knobs per strategy (a name of `autocompress.strategies.STRATEGIES`, listed below), e.g. "
        "{anneal: {cooling: 0.9}}; 'autocompress strategies' lists the knobs",
    )
    measure: MeasureSpec = Field(MeasureSpec(), description="latency measurement")


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return (f"; did you mean {close[0]!r}? allowed: " if close else "; allowed: ") + ", ".join(allowed)


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = SpaceFile
    for part in loc[:-1]:
        if model is SpaceFile and part == "layers":
            model = LayerChoicesSpec
            continue
        info = model.model_fields.get(str(part))
        if info is None or not isinstance(info.annotation, type) or not issubclass(info.annotation, BaseModel):
            continue
        model = info.annotation
    return list(model.model_fields)


def parse_space(text: str, source: str = "<space>") -> SpaceFile:
    """Parse and validate space YAML; any problem raises `UserError` naming the file and field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise UserError(where, f"malformed YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise UserError(source, "must be a YAML mapping with at least a 'task' key")
    try:
        spec = SpaceFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        field_path = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}" + _did_you_mean(str(loc[-1]), _allowed_keys(loc))
        elif err["type"] == "missing":
            message = "is required"
        else:
            message = f"{err['msg']} (got {err.get('input')!r})"
        raise UserError(f"{source}: {field_path}", message) from None
    _check_registered(spec, source)
    return spec


def registries() -> dict[str, tuple[str, dict[str, Any]]]:
    """The registries a space file names entries of, keyed by the field that names them, each with its
    import path: the tables the schema checks against, the docs list and ``register_*`` extends (imported
    here, on first use: they need torch)."""
    from autocompress.compress import CRITERIA, PRUNERS, QUANTIZERS
    from autocompress.strategies import STRATEGIES

    return {
        "criterion": ("autocompress.compress.CRITERIA", CRITERIA),
        "quantizer": ("autocompress.compress.QUANTIZERS", QUANTIZERS),
        "pruner": ("autocompress.compress.PRUNERS", PRUNERS),
        "strategy": ("autocompress.strategies.STRATEGIES", STRATEGIES),
    }


def _check_registered(spec: SpaceFile, source: str) -> None:
    """Every registry name in the file must be registered. The task's module is imported first (when it can
    be found; a task that cannot load is reported by `load_task`), since that is where a user registers
    their own criteria, quantizers, pruners and strategies."""
    module = spec.task.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if found:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # load_task names the task and the missing import
    tables = {key: table for key, (_, table) in registries().items()}
    named = [(f"defaults.{key}", getattr(spec.defaults, key), key) for key in ("criterion", "quantizer", "pruner")]
    named += [(f"strategy.{name}", name, "strategy") for name in spec.strategy]
    for where, name, key in named:
        if name not in tables[key]:
            raise UserError(f"{source}: {where}", f"unknown {key} {name!r}" + _did_you_mean(name, list(tables[key])))


def load_space_file(path: str | Path) -> tuple[SpaceFile, str]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(str(path), f"cannot read space file ({exc.strerror})") from None
    return parse_space(text, str(path)), text


@dataclass(frozen=True)
@layer_option_fields(choices=True)
class LayerChoices:
    """The choices of one layer: a tuple per `LAYER_OPTIONS` row (the row's default alone when not searched)."""

    if TYPE_CHECKING:  # the fields come from LAYER_OPTIONS, which the type checker cannot follow

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def __getattr__(self, name: str) -> tuple[Any, ...]: ...

    def to_dict(self) -> dict[str, list[Any]]:
        """Options beyond the core two are written only when they have a choice beyond their default, so older
        spaces keep their JSON."""
        return {
            option.name: list(getattr(self, option.name))
            for option in LAYER_OPTIONS
            if option.core or getattr(self, option.name) != (option.default,)
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[Any]]) -> LayerChoices:
        return cls(**{name: tuple(values) for name, values in data.items()})


@dataclass(frozen=True)
class Space:
    """A validated space resolved against a model: the choices per layer that controllers search.

    JSON-serialisable (`to_dict`/`from_dict`) so that a study is rebuilt from the store alone.
    """

    task: str
    objectives: dict[str, str]
    constraints: dict[str, float]
    finetune_epochs: tuple[float, ...]
    layers: dict[str, LayerChoices]
    criterion: str = "l1"
    measure: dict[str, Any] = field(default_factory=lambda: MeasureSpec().model_dump())
    eta: int = 3
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    quantizer: str = DEFAULT_QUANTIZER
    per_channel: bool = True
    round_to: int | None = None
    pruner: str = DEFAULT_PRUNER
    #: static facts per layer (kind, in/out channels, kernel, stride, MACs) for strategies that embed layers
    layer_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: measured per-layer latency on this study's runtimes, for the strategies that steer by it (added when the
    #: study is created, stored with the space so a resume reads the same table)
    latency_table: LatencyTable | None = None

    def __post_init__(self) -> None:
        for name in self.constraints:  # a space built in code or read from a store skipped the file's schema
            if name not in CONSTRAINTS:
                raise UserError(
                    f"space: constraints.{name}", "unknown constraint" + _did_you_mean(name, list(CONSTRAINTS))
                )

    def dimensions(self) -> list[tuple[str, str, tuple[Any, ...]]]:
        """(layer, setting, choices) for every setting with more than one choice, in a fixed order."""
        dims = []
        for name, choices in self.layers.items():
            for setting in SETTINGS:
                values = getattr(choices, setting)
                if len(values) > 1:
                    dims.append((name, setting, values))
        return dims

    def policy_from_params(self, params: dict[str, Any]) -> Policy:
        """Build a policy from ``{"layer/setting": value}``; settings not given take their only choice."""
        layers = {
            name: LayerSetting(
                **{
                    option.name: option.cast(params.get(f"{name}/{option.name}", getattr(choices, option.name)[0]))
                    for option in LAYER_OPTIONS
                }
            )
            for name, choices in self.layers.items()
        }
        return Policy.from_mapping(layers, self.criterion, self.quantizer, self.per_channel, self.round_to, self.pruner)

    def contains(self, policy: Policy) -> bool:
        if set(self.layers) != {name for name, _ in policy}:
            return False
        return all(getattr(s, setting) in getattr(self.layers[n], setting) for n, s in policy for setting in SETTINGS)

    def shipping(self) -> dict[str, Any]:
        """What a trial needs to pick the one runtime it ships on (`autocompress.runtime.shipping_runtime`):
        ``serving_batch``, the batch size the study judges speed at (32 when an objective reads a batch-32
        figure, or when none reads a speed and a constraint does; else 1), and ``max_accuracy_drop``, the
        accuracy budget, when the space sets one. Passed with ``measure`` to every trial."""
        speeds = ("latency_ms", "speedup", "latency_ms_b32", "speedup_b32")
        judged = [m for m in self.objectives if m in speeds] or [
            CONSTRAINTS[c].metric for c in self.constraints if CONSTRAINTS[c].metric in speeds
        ]
        rule: dict[str, Any] = {"serving_batch": 32 if judged and judged[0].endswith("_b32") else 1}
        if "max_accuracy_drop" in self.constraints:
            rule["max_accuracy_drop"] = self.constraints["max_accuracy_drop"]
        return rule

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "objectives": dict(self.objectives),
            "constraints": dict(self.constraints),
            "finetune_epochs": list(self.finetune_epochs),
            "layers": {n: c.to_dict() for n, c in self.layers.items()},
            "criterion": self.criterion,
            "measure": dict(self.measure),
            "eta": self.eta,
            "strategy_options": {k: dict(v) for k, v in self.strategy_options.items()},
            "quantizer": self.quantizer,
            "per_channel": self.per_channel,
            "round_to": self.round_to,
            **({"pruner": self.pruner} if self.pruner != DEFAULT_PRUNER else {}),
            "layer_info": {k: dict(v) for k, v in self.layer_info.items()},
            **({"latency_table": self.latency_table.to_dict()} if self.latency_table else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        return cls(
            task=data["task"],
            objectives=dict(data["objectives"]),
            constraints=dict(data["constraints"]),
            finetune_epochs=tuple(data["finetune_epochs"]),
            layers={n: LayerChoices.from_dict(c) for n, c in data["layers"].items()},
            criterion=data.get("criterion", "l1"),
            measure=dict(data.get("measure", MeasureSpec().model_dump())),
            eta=data.get("eta", 3),
            strategy_options=dict(data.get("strategy_options", {})),
            quantizer=data.get("quantizer", DEFAULT_QUANTIZER),
            per_channel=data.get("per_channel", True),
            round_to=data.get("round_to"),
            pruner=data.get("pruner", DEFAULT_PRUNER),
            layer_info={k: dict(v) for k, v in data.get("layer_info", {}).items()},
            latency_table=LatencyTable.from_dict(data["latency_table"]) if data.get("latency_table") else None,
        )


def resolve_space(spec: SpaceFile, layers: list[LayerInfo], source: str = "<space>") -> Space:
    """Apply defaults and glob overrides to the discovered layers; reject patterns that match nothing and
    pruning asked of a layer that cannot be pruned (named, before any trial runs)."""
    defaults = {option.name: tuple(getattr(spec.defaults, option.name) or [option.default]) for option in LAYER_OPTIONS}
    choices: dict[str, LayerChoices] = {}
    for info in layers:
        values = {**defaults, **({} if info.prunable else {"channel_sparsity": (0.0,)})}
        set_by: dict[str, str] = {}  # option -> the last pattern that set it
        for pattern, override in spec.layers.items():
            if fnmatch.fnmatchcase(info.name, pattern):
                for option in LAYER_OPTIONS:
                    if getattr(override, option.name) is not None:
                        values[option.name] = tuple(getattr(override, option.name))
                        set_by[option.name] = pattern
        if not info.prunable and any(s > 0 for s in values["channel_sparsity"]):
            raise UserError(
                f"{source}: layers.{set_by['channel_sparsity']}",
                f"layer {info.name!r} cannot be pruned ({info.reason}); set its channel_sparsity to [0.0]",
            )
        for setting in ("weight_bits", "activation_bits"):
            if 1 in values[setting] and spec.defaults.quantizer != "bnn":
                where = f"layers.{set_by[setting]}" if setting in set_by else "defaults"
                raise UserError(
                    f"{source}: {where}.{setting}",
                    f"1 bit needs defaults.quantizer 'bnn' (got {spec.defaults.quantizer!r}); use 2..8 bits",
                )
        # None (activation bits that follow the weights) sorts first
        choices[info.name] = LayerChoices(**{k: tuple(sorted(set(v), key=lambda c: c or 0)) for k, v in values.items()})
    names = [info.name for info in layers]
    for pattern in spec.layers:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            hint = _did_you_mean(pattern, names)
            raise UserError(f"{source}: layers.{pattern}", f"pattern matches no layer of the model{hint}")
    return Space(
        task=spec.task,
        objectives=dict(spec.objectives),
        constraints={k: v for k, v in spec.constraints.model_dump().items() if v is not None},
        finetune_epochs=tuple(spec.fidelity.finetune_epochs),
        layers=choices,
        criterion=spec.defaults.criterion,
        measure=spec.measure.model_dump(),
        eta=spec.fidelity.eta,
        strategy_options={k: dict(v) for k, v in spec.strategy.items()},
        quantizer=spec.defaults.quantizer,
        per_channel=spec.defaults.per_channel,
        round_to=spec.defaults.round_to,
        pruner=spec.defaults.pruner,
        layer_info={info.name: info.static_info() for info in layers},
    )
