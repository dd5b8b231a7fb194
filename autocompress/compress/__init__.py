"""Compression: pure, in-memory transforms of a model under a `Policy` (no I/O).

`apply` = `prune` (physical channel removal) then `quantize` (real int8). Fine-tuning between the two is the
trial's job (`autocompress.runtime.run_trial`), since it needs the task's data; a policy whose quantizer
trains (`needs_training`) is prepared with `prepare_quantization` before that fine-tuning.

Pruning criteria (`CRITERIA`, by `Policy.criterion` name): l1, l2, fpgm, and the ones that see the task
first (`Criterion.prepare`, run by `prepare_criterion`): apoz, mean_activation (calibration activations),
slim (BN-scale sparsity training), taylor (Molchanov et al. 2019's TaylorFO over the batches of a short fine-tune).

Quantizers (one private module each, all behind `Quantizer`, by `Policy.quantizer` name in `QUANTIZERS`):
naive, PTQ observers (minmax, ema, histogram, percentile), qat, dorefa, bnn, lsq, dynamic (int8 Linear with
per-call activation ranges, for transformers).

Attention heads and FFN width of models as they ship (Hugging Face BERT-style attention,
`nn.MultiheadAttention`): `remove_heads`, `shrink_ffn` (physical, through the models' own modules).

Unstructured pruners (one private module each, all behind `UnstructuredPruner`, by `Policy.pruner` name in
`PRUNERS`): level, agp, lottery (rewinds to the task's early checkpoint; ``lottery_trained`` to the trained
weights), admm; they realise ``weight_sparsity`` during fine-tuning (`sparse_finetune`). The ``admm``
criterion trains by ADMM towards the channel sparsity before `prune` removes the channels (`structured_admm`).
"""

from collections.abc import Iterable

from torch import nn

from autocompress._inputs import ModelInputs
from autocompress.compress._admm import (
    ADMM,
    ADMMChannelImportance,
    ADMMPruner,
    Block,
    admm_channels,
    channel_blocks,
    channel_projection,
    project_magnitude,
)
from autocompress.compress._agp import AGPPruner, cubic_sparsity
from autocompress.compress._bnn import BNNQuantizer, SignActivation
from autocompress.compress._criteria import (
    CRITERIA,
    APoZCriterion,
    Criterion,
    MeanActivationCriterion,
    SlimCriterion,
    TaylorCriterion,
    make_criterion,
    prepare_criterion,
    register_criterion,
)
from autocompress.compress._dorefa import DoReFaQuantizer
from autocompress.compress._dynamic import DynamicQuantizer
from autocompress.compress._heads import (
    PrunedMultiheadAttention,
    attention_head_counts,
    ffn_layers,
    remove_heads,
    shrink_ffn,
)
from autocompress.compress._level import LevelPruner
from autocompress.compress._lottery import LotteryPruner
from autocompress.compress._lowering import (
    BACKEND,
    QUANTIZERS,
    REFERENCE_LAYERS,
    calibrate_quantization,
    copy_for_lowering,
    dequantized_layer,
    fx_quantization,
    get_quantizer,
    latency_basis,
    layer_specs,
    lowered_layers,
    needs_training,
    prepare_quantization,
    quantize,
    quantized_layers,
    register_quantizer,
)
from autocompress.compress._lsq import LSQQuantizer
from autocompress.compress._prune import ChannelPruning, kept_channels, out_widths, prune, prune_to_widths
from autocompress.compress._pruners import (
    PRUNERS,
    STRUCTURED_ADMM_SHARE,
    get_pruner,
    register_pruner,
    sparse_finetune,
    structured_admm,
)
from autocompress.compress._ptq import NaiveQuantizer, ObserverQuantizer, PercentileObserver
from autocompress.compress._qat import QATQuantizer
from autocompress.compress._quant_base import SUPPORTED_BITS, Quantizer, QuantSpec
from autocompress.compress._sparse_base import (
    Masks,
    RewindPoint,
    Trainer,
    UnstructuredPruner,
    layer_weights,
    magnitude_mask,
)
from autocompress.space import Policy


def apply(
    model: nn.Module, policy: Policy, example_input: ModelInputs, calibration: Iterable[ModelInputs]
) -> nn.Module:
    """Prune `model` in place, then return its quantized form (without fine-tuning in between)."""
    return quantize(prune(model, policy, example_input), policy, example_input, calibration)


__all__ = [
    "ChannelPruning",
    "APoZCriterion",
    "ADMM",
    "ADMMChannelImportance",
    "ADMMPruner",
    "AGPPruner",
    "BACKEND",
    "BNNQuantizer",
    "Block",
    "CRITERIA",
    "Criterion",
    "DoReFaQuantizer",
    "DynamicQuantizer",
    "LSQQuantizer",
    "MeanActivationCriterion",
    "LevelPruner",
    "LotteryPruner",
    "Masks",
    "NaiveQuantizer",
    "ObserverQuantizer",
    "PRUNERS",
    "PercentileObserver",
    "PrunedMultiheadAttention",
    "QATQuantizer",
    "QUANTIZERS",
    "REFERENCE_LAYERS",
    "QuantSpec",
    "Quantizer",
    "RewindPoint",
    "STRUCTURED_ADMM_SHARE",
    "SUPPORTED_BITS",
    "SignActivation",
    "SlimCriterion",
    "TaylorCriterion",
    "Trainer",
    "UnstructuredPruner",
    "admm_channels",
    "apply",
    "calibrate_quantization",
    "attention_head_counts",
    "copy_for_lowering",
    "dequantized_layer",
    "fx_quantization",
    "channel_blocks",
    "channel_projection",
    "cubic_sparsity",
    "ffn_layers",
    "get_pruner",
    "get_quantizer",
    "latency_basis",
    "kept_channels",
    "out_widths",
    "layer_specs",
    "layer_weights",
    "lowered_layers",
    "make_criterion",
    "magnitude_mask",
    "needs_training",
    "prepare_criterion",
    "prepare_quantization",
    "project_magnitude",
    "prune",
    "prune_to_widths",
    "quantize",
    "quantized_layers",
    "register_criterion",
    "register_pruner",
    "register_quantizer",
    "remove_heads",
    "shrink_ffn",
    "sparse_finetune",
    "structured_admm",
]
