"""ONNX Runtime: the QDQ ONNX file of `autocompress.deploy._qdq` (for ``quantizer: dynamic``: the float file
with ONNX Runtime's dynamic int8 MatMuls, `dynamic_onnx`), run by an ``InferenceSession`` on the CPU
execution provider with one intra-op and one inter-op thread (inference then runs on the calling thread, so
its CPU time is the latency)."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from autocompress.deploy._base import Artefact, CompiledModel, Inputs, describe_inputs, runtime_error
from autocompress.deploy._qdq import QDQRuntime


class _Session(CompiledModel):
    def __init__(self, session: Any) -> None:
        super().__init__()
        self.session = session
        self.names = [i.name for i in session.get_inputs()]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(None, dict(zip(self.names, arrays, strict=True))))


def session_options(threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # no memory pattern: planned from the first run, its block came on top of the arena's chunks from that run
    # (maxvit_t at 224x224, batch 32: 2 GB a session instead of 1), and it bought no speed (measured with 1
    # thread: resnet18, mobilenet_v3_small, efficientnet_b0 at batch 1 and 32 within 3 % either way)
    options.enable_mem_pattern = False
    return options


class OnnxRuntime(QDQRuntime):
    name = "onnxruntime"
    package = "onnxruntime"
    module = "onnxruntime"
    runs_dynamic_int8 = True

    def from_onnx(self, onnx_bytes: bytes, example: Inputs) -> Artefact:
        artefact = Artefact(self.name, {"model.onnx": onnx_bytes}, describe_inputs(example))
        self.load(artefact)  # a graph the runtime cannot compile fails here, in lowering, with its reason
        return artefact

    def load(self, artefact: Artefact, threads: int = 1) -> nn.Module:
        import onnxruntime as ort

        try:
            session = ort.InferenceSession(
                artefact.files["model.onnx"], session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - the runtime's own compile error, reported in one line
            raise runtime_error("onnxruntime", "compile", exc) from None
        return _Session(session)

    def server_code(self) -> str:
        return (
            "import onnxruntime as ort, torch\n"
            "opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1\n"
            "session = ort.InferenceSession(f'{out}/model.onnx', opts, providers=['CPUExecutionProvider'])\n"
            "names = [i.name for i in session.get_inputs()]\n"
            "class Model:\n"
            "    def eval(self): return self\n"
            "    def __call__(self, *xs):\n"
            "        outs = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})\n"
            "        return torch.from_numpy(outs[0]) if len(outs) == 1 else tuple(map(torch.from_numpy, outs))\n"
            "model = Model()\n"
        )
