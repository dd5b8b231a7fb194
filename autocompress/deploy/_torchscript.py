"""TorchScript (legacy target): torch.ao FX int8 lowering (`autocompress.compress.quantize`), traced and frozen.

Deprecated upstream in favour of torch.export, and torch.ao's FX quantization warns that it is deprecated
too; kept while torch ships it, because every result before the ONNX targets was measured on it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import torch
from torch import nn

from autocompress.compress import copy_for_lowering, quantize
from autocompress.deploy._base import Artefact, Inputs, Runtime, as_tuple, describe_inputs
from autocompress.measure import serialize, to_torchscript
from autocompress.space import Policy


class TorchScriptRuntime(Runtime):
    name = "torchscript"
    package = "torch"
    module = "torch"

    def lower(self, model: nn.Module, policy: Policy, example: Inputs, calibration: Iterable[Inputs]) -> Artefact:
        first = as_tuple(example)[0]
        deployed = quantize(copy_for_lowering(model), policy, first, calibration)  # type: ignore[arg-type]
        script = to_torchscript(deployed, example)
        return Artefact(self.name, {"model.pt": serialize(script)}, describe_inputs(example))

    def load(self, artefact: Artefact, threads: int = 1) -> nn.Module:
        """The ScriptModule itself (torch's thread count is set by whoever times it: `compare_latency`)."""
        return torch.jit.load(io.BytesIO(artefact.files["model.pt"]))

    def server_code(self) -> str:
        return "import torch\nmodel = torch.jit.load(f'{out}/model.pt')\n"
