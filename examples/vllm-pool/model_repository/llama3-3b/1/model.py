"""Aragog's model contract on top of Triton's vLLM backend (a Triton Python-backend model).

Aragog's executor and profiler call every pool model with one unary gRPC inference
(services/executor/model_client.py; batch dimension first):
    inputs   prompt BYTES [1], stage BYTES [1], output_tokens INT32 [1]
    outputs  text BYTES [1], completion_tokens INT32 [1]
Triton's vLLM backend takes `text_input` and JSON `sampling_parameters` instead, answers
`text_output`, and is decoupled, which a unary call cannot reach. This model serves under the
pool model's name and turns each request into one BLS call on the vLLM model its ENGINE_MODEL
parameter names: the prompt wrapped in PROMPT_TEMPLATE (the model's chat format, "{prompt}"
where the prompt goes), greedy decoding, at most `output_tokens` new tokens, the prompt left
out of the answer. `stage` is accepted and unused: the prompt already is the stage's prompt.

execute() returns at once; each request is answered from a worker thread through its response
sender (a non-decoupled model may do so since Triton 24.06), so a long generation never holds
up the requests behind it and vLLM batches them all continuously. MAX_IN_FLIGHT bounds the
threads: the pool's saturation_batch x instances, the most Aragog's scheduler places here.

Needs Triton 24.12 or later with the vLLM backend (the exclude_input_in_output and
return_num_output_tokens inputs) and GPUs. Checked offline, against a fake
triton_python_backend_utils, by tests/unit/test_vllm_example.py. The three adapters of
examples/vllm-pool carry the same file (the test checks it): edit one, copy it to the others.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils


def sampling_parameters(output_tokens: int) -> dict:
    """vLLM SamplingParams of one stage: greedy, at most `output_tokens` new tokens."""
    return {"max_tokens": max(1, int(output_tokens)), "temperature": 0}


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {})

        def param(key, default=None):
            value = params.get(key, {}).get("string_value", default)
            if value is None:
                raise pb_utils.TritonModelException(f"config.pbtxt needs parameter {key}")
            return value

        self.engine = param("ENGINE_MODEL")
        self.template = param("PROMPT_TEMPLATE", "{prompt}")
        self.workers = ThreadPoolExecutor(max_workers=int(param("MAX_IN_FLIGHT", "64")),
                                          thread_name_prefix=args["model_name"])

    def execute(self, requests):
        for request in requests:
            # Read the inputs now: Triton frees a request's tensors when execute returns.
            prompts = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy()
            limits = pb_utils.get_input_tensor_by_name(request, "output_tokens").as_numpy()
            self.workers.submit(self.answer, request.get_response_sender(),
                                [p.decode("utf-8", "replace") for p in prompts.reshape(-1)],
                                [int(n) for n in limits.reshape(-1)])
        return None

    def answer(self, sender, prompts, limits):
        """Generate every row of one request and send its one response."""
        try:
            outs = [self.generate(p, n) for p, n in zip(prompts, limits, strict=True)]
            response = pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("text", np.array([t.encode("utf-8") for t, _ in outs],
                                                 dtype=np.object_).reshape(-1, 1)),
                pb_utils.Tensor("completion_tokens",
                                np.array([n for _, n in outs], dtype=np.int32).reshape(-1, 1)),
            ])
        except Exception as e:  # the caller gets the error; the executor retries the stage
            response = pb_utils.InferenceResponse(
                error=pb_utils.TritonError(f"{self.engine}: {e}"))
        try:
            sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:  # e.g. the client went away
            pb_utils.Logger.log_error(f"{self.engine}: could not send a response: {e}")

    def engine_request(self, prompt: str, output_tokens: int):
        """The BLS request for the vLLM model (inputs as its backend declares them)."""
        text = self.template.replace("{prompt}", prompt)
        return pb_utils.InferenceRequest(
            model_name=self.engine,
            requested_output_names=["text_output", "num_output_tokens"],
            inputs=[
                pb_utils.Tensor("text_input", np.array([text.encode("utf-8")], dtype=np.object_)),
                pb_utils.Tensor("sampling_parameters", np.array(
                    [json.dumps(sampling_parameters(output_tokens)).encode("utf-8")],
                    dtype=np.object_)),
                pb_utils.Tensor("exclude_input_in_output", np.array([True])),
                pb_utils.Tensor("return_num_output_tokens", np.array([True])),
            ])

    def generate(self, prompt: str, output_tokens: int) -> tuple[str, int]:
        """The engine's answer and its token count (without streaming, one response; the
        text of several would be consecutive pieces)."""
        pieces, tokens = [], 0
        for response in self.engine_request(prompt, output_tokens).exec(decoupled=True):
            if response.has_error():
                raise RuntimeError(response.error().message())
            text = pb_utils.get_output_tensor_by_name(response, "text_output")
            if text is not None:
                pieces += [t.decode("utf-8") if isinstance(t, bytes) else str(t)
                           for t in text.as_numpy().reshape(-1)]
            count = pb_utils.get_output_tensor_by_name(response, "num_output_tokens")
            if count is not None:
                tokens += int(count.as_numpy().sum())
        return "".join(pieces), tokens

    def finalize(self):
        self.workers.shutdown(wait=True)  # answers in flight are sent before the model unloads
