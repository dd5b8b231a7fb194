"""OpenVINO: the same QDQ ONNX file as ONNX Runtime's, converted to OpenVINO IR (``model.xml`` + ``model.bin``,
weights kept in their precision: int8 where the policy quantizes, float32 elsewhere, no FP16 compression) and
compiled for the CPU with ``INFERENCE_NUM_THREADS: 1`` and ``PERFORMANCE_HINT: LATENCY``, which runs the
inference on the calling thread, and ``INFERENCE_PRECISION_HINT: f32`` so that float layers are not run in
bf16 on CPUs that have it (the accuracy measured is that of the file as it ships).

``quantizer: dynamic`` is unsupported here: OpenVINO's int8 comes from static FakeQuantize ranges (its
low-precision transformations need each activation's scale fixed in the graph), and it has no int8 form of
ONNX Runtime's per-call ``DynamicQuantizeLinear -> MatMulInteger``. Its CPU plugin's own dynamic quantization
(``DYNAMIC_QUANTIZATION_GROUP_SIZE``) serves weight-compressed models (NNCF ``compress_weights``), a different
scheme with its own weight rounding, which is not tried here."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from autocompress.deploy._base import Artefact, CompiledModel, Inputs, describe_inputs, runtime_error
from autocompress.deploy._qdq import QDQRuntime


def compile_config(threads: int) -> dict[str, Any]:
    return {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}


class _Request(CompiledModel):
    def __init__(self, compiled: Any) -> None:
        super().__init__()
        self.request = compiled.create_infer_request()

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(arrays, share_inputs=True, share_outputs=True)
        return list(results.values())


class OpenVINORuntime(QDQRuntime):
    name = "openvino"
    package = "openvino"
    module = "openvino"

    def from_onnx(self, onnx_bytes: bytes, example: Inputs) -> Artefact:
        import openvino as ov

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "model.onnx").write_bytes(onnx_bytes)
            try:
                converted = ov.convert_model(folder / "model.onnx")
            except Exception as exc:  # noqa: BLE001 - the converter's own error, in one line
                raise runtime_error("openvino", "convert", exc) from None
            ov.save_model(converted, folder / "model.xml", compress_to_fp16=False)
            files = {name: (folder / name).read_bytes() for name in ("model.xml", "model.bin")}
        artefact = Artefact(self.name, files, describe_inputs(example))
        self.load(artefact)  # a graph the CPU plugin cannot compile fails here, in lowering, with its reason
        return artefact

    def load(self, artefact: Artefact, threads: int = 1) -> nn.Module:
        import openvino as ov

        core = ov.Core()
        try:
            weights = ov.Tensor(np.frombuffer(artefact.files["model.bin"], dtype=np.uint8).copy())
            model = core.read_model(model=artefact.files["model.xml"].decode(), weights=weights)
            compiled = core.compile_model(model, "CPU", compile_config(threads))
        except Exception as exc:  # noqa: BLE001 - the plugin's own compile error, in one line
            raise runtime_error("openvino", "compile", exc) from None
        return _Request(compiled)

    def server_code(self) -> str:
        return (
            "import openvino as ov, torch\n"
            "core = ov.Core()\n"
            "compiled = core.compile_model(core.read_model(f'{out}/model.xml'), 'CPU',\n"
            "    {'INFERENCE_NUM_THREADS': 1, 'PERFORMANCE_HINT': 'LATENCY', 'INFERENCE_PRECISION_HINT': 'f32'})\n"
            "request = compiled.create_infer_request()\n"
            "class Model:\n"
            "    def eval(self): return self\n"
            "    def __call__(self, *xs):\n"
            "        outs = list(request.infer([x.numpy() for x in xs]).values())\n"
            "        outs = [torch.from_numpy(o.copy()) for o in outs]\n"
            "        return outs[0] if len(outs) == 1 else tuple(outs)\n"
            "model = Model()\n"
        )
