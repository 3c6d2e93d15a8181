"""The executor's only door to models: Triton's gRPC API through tritonclient.

Any Triton server whose models take `prompt`, `stage` (BYTES) and `output_tokens` (INT32)
and return `text` works, emulated (aragog.pool) or real (a vLLM/TensorRT-LLM backend).
"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc.aio as triton
from aragog.common import tracing
from tritonclient.utils import InferenceServerException


class ModelCallError(Exception):
    """A model call failed (model down, timeout, bad response)."""


class ModelClient:
    def __init__(self, url: str):
        self.url = url
        self._client = triton.InferenceServerClient(url=url)

    async def close(self) -> None:
        await self._client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready())
        except InferenceServerException:
            return False

    async def model_ready(self, model: str) -> bool:
        try:
            return bool(await self._client.is_model_ready(model))
        except InferenceServerException:
            return False

    async def generate(self, model: str, stage: str, prompt: str, output_tokens: int,
                       timeout_s: float, request_id: str = "") -> str:
        inputs = [
            triton.InferInput("prompt", [1, 1], "BYTES"),
            triton.InferInput("stage", [1, 1], "BYTES"),
            triton.InferInput("output_tokens", [1, 1], "INT32"),
        ]
        inputs[0].set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([[stage.encode()]], dtype=np.object_))
        inputs[2].set_data_from_numpy(np.array([[output_tokens]], dtype=np.int32))
        parent = tracing.traceparent()  # a Triton with OpenTelemetry tracing joins the trace
        try:
            result = await self._client.infer(
                model, inputs, outputs=[triton.InferRequestedOutput("text")],
                request_id=request_id, client_timeout=timeout_s,
                headers={"traceparent": parent} if parent else None,
            )
        except InferenceServerException as e:
            raise ModelCallError(f"{model}: {e.message()}") from e
        text = result.as_numpy("text")
        if text is None:
            raise ModelCallError(f"{model}: response has no `text` output")
        value = text.reshape(-1)[0]
        return value.decode() if isinstance(value, bytes) else str(value)
