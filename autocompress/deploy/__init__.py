"""Deploy targets: lower a compressed model to a runtime's own artefact, load it, name and version.

One private module per runtime, re-exported here: `OpenVINORuntime` (``openvino``), `OnnxRuntime`
(``onnxruntime``), `TorchScriptRuntime` (``torchscript``, legacy). `RUNTIMES` maps the names used in space
files (``measure.runtimes``) to them.
"""

from autocompress.deploy._base import (
    Artefact,
    CompiledModel,
    Inputs,
    LoweringError,
    Runtime,
    as_tuple,
    describe_inputs,
    input_names,
)
from autocompress.deploy._onnxruntime import OnnxRuntime
from autocompress.deploy._openvino import OpenVINORuntime
from autocompress.deploy._qdq import QDQRuntime, count_qdq, lower_all, qdq_module, qdq_onnx, to_onnx
from autocompress.deploy._torchscript import TorchScriptRuntime

#: runtimes by name, in the order they are listed and measured
RUNTIMES: dict[str, Runtime] = {r.name: r for r in (OpenVINORuntime(), OnnxRuntime(), TorchScriptRuntime())}


def get_runtime(name: str) -> Runtime:
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def installed_runtimes() -> list[str]:
    """Names of the runtimes whose package is installed here (the default of ``measure.runtimes``)."""
    return [name for name, runtime in RUNTIMES.items() if runtime.available()]


__all__ = [
    "RUNTIMES",
    "Artefact",
    "CompiledModel",
    "Inputs",
    "LoweringError",
    "OnnxRuntime",
    "OpenVINORuntime",
    "QDQRuntime",
    "Runtime",
    "TorchScriptRuntime",
    "as_tuple",
    "count_qdq",
    "describe_inputs",
    "get_runtime",
    "input_names",
    "installed_runtimes",
    "lower_all",
    "qdq_module",
    "qdq_onnx",
    "to_onnx",
]
