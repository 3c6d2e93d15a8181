"""examples/vllm-pool: a pool of REAL models on Triton's vLLM backend, checked offline.

Nothing here runs vLLM, Triton or a GPU (these machines have none). What is checked: the
pool file loads; the model repository holds, for each pool model, its adapter and its vLLM
engine and nothing else; every config.pbtxt parses as Triton's ModelConfig; each adapter
declares the model contract the executor relies on (the emulated pool's INPUTS/OUTPUTS) and
is not decoupled; each engine's arguments agree with the pool (tensor_parallel_size,
max_num_seqs = saturation_batch, as many engines as instances, no GPU used twice); and the
adapter's model.py, run against a fake `triton_python_backend_utils`, turns a request into
the BLS request the vLLM backend takes and the engine's answer into the executor's response.

`problems()` collects what is wrong instead of asserting, so that the tests can also show
each check failing on a broken copy of the example.
"""

from __future__ import annotations

import importlib.util
import json
import py_compile
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pytest
import yaml
from aragog.common.pool import PoolSpec, load_pool
from aragog.pool.emulated import INPUTS, OUTPUTS
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "vllm-pool"
GPUS_PER_NODE = 8
FINAL = 1  # TRITONSERVER_RESPONSE_COMPLETE_FINAL

# The vLLM backend's inputs/outputs this adapter uses, as its auto_complete_config declares them
# (triton-inference-server/vllm_backend src/model.py, release branches r24.12 to r26.01).
VLLM_INPUTS = {"text_input": "TYPE_STRING", "sampling_parameters": "TYPE_STRING",
               "exclude_input_in_output": "TYPE_BOOL", "return_num_output_tokens": "TYPE_BOOL"}
VLLM_OUTPUTS = {"text_output": "TYPE_STRING", "num_output_tokens": "TYPE_UINT32"}
NUMPY = {"TYPE_STRING": np.object_, "TYPE_BOOL": np.bool_, "TYPE_INT32": np.int32,
         "TYPE_UINT32": np.uint32}


def contract(tensors) -> dict[str, tuple[str, list[int]]]:
    """Name -> (Triton type, dims) of the emulated pool's tensors: the executor's contract."""
    types_ = {bytes: "TYPE_STRING", np.int32: "TYPE_INT32"}
    return {t.name: (types_[t.dtype], list(t.shape)) for t in tensors}


def declared(tensors) -> dict[str, tuple[str, list[int]]]:
    return {t.name: (mc.DataType.Name(t.data_type), list(t.dims)) for t in tensors}


def parse_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text("utf-8"), mc.ModelConfig())


def problems(example: Path) -> list[str]:
    """Everything inconsistent in an example directory (pool.yaml + model_repository)."""
    out: list[str] = []
    pool = load_pool(str(example / "pool.yaml"))
    repo = example / "model_repository"
    if pool.time_scale != 1.0:
        out.append(f"time_scale is {pool.time_scale}: a real pool runs in real time (1)")
    present = {p.name for p in repo.iterdir() if p.is_dir()}
    wanted = {n for m in pool.models for n in (m.name, f"{m.name}-vllm")}
    out += [f"{n}: missing from model_repository" for n in sorted(wanted - present)]
    out += [f"{n}: in model_repository but no pool model's" for n in sorted(present - wanted)]
    owner: dict[int, str] = {}  # GPU -> engine using it
    first_adapter = None
    for m in pool.models:
        if not {m.name, f"{m.name}-vllm"} <= present:
            continue
        try:
            adapter = parse_config(repo / m.name / "config.pbtxt")
            engine = parse_config(repo / f"{m.name}-vllm" / "config.pbtxt")
        except text_format.ParseError as e:
            out.append(f"{m.name}: config.pbtxt does not parse: {e}")
            continue
        # The adapter: what the executor calls.
        if adapter.backend != "python" or adapter.name not in ("", m.name):
            out.append(f"{m.name}: adapter must be backend python named {m.name}")
        if adapter.max_batch_size < 1 or adapter.model_transaction_policy.decoupled:
            out.append(f"{m.name}: the executor's unary calls need max_batch_size >= 1 "
                       "(batch dimension first) and a model that is not decoupled")
        for what, got, want in (("inputs", declared(adapter.input), contract(INPUTS)),
                                ("outputs", declared(adapter.output), contract(OUTPUTS))):
            if got != want:
                out.append(f"{m.name}: adapter {what} {got} are not the contract {want}")
        if any(g.kind != mc.ModelInstanceGroup.KIND_CPU for g in adapter.instance_group):
            out.append(f"{m.name}: the adapter must take no GPU (KIND_CPU)")
        params = {k: v.string_value for k, v in adapter.parameters.items()}
        if params.get("ENGINE_MODEL") != f"{m.name}-vllm":
            out.append(f"{m.name}: ENGINE_MODEL must name {m.name}-vllm")
        if params.get("PROMPT_TEMPLATE", "{prompt}").count("{prompt}") != 1:
            out.append(f"{m.name}: PROMPT_TEMPLATE must hold {{prompt}} once")
        if params.get("MAX_IN_FLIGHT") != str(m.capacity):
            out.append(f"{m.name}: MAX_IN_FLIGHT must be saturation_batch x instances "
                       f"= {m.capacity}")
        code = repo / m.name / "1" / "model.py"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                py_compile.compile(str(code), cfile=f"{tmp}/model.pyc", doraise=True)
        except (py_compile.PyCompileError, FileNotFoundError) as e:
            out.append(f"{m.name}: 1/model.py does not compile: {e}")
        else:
            first_adapter = first_adapter or code
            if code.read_bytes() != first_adapter.read_bytes():
                out.append(f"{m.name}: 1/model.py differs from "
                           f"{first_adapter.parent.parent.name}'s")
        # The engine: vLLM on the pool's GPUs.
        name = f"{m.name}-vllm"
        if engine.backend != "vllm":
            out.append(f"{name}: backend must be vllm")
        try:
            args = json.loads((repo / name / "1" / "model.json").read_text("utf-8"))
        except (OSError, ValueError) as e:
            out.append(f"{name}: 1/model.json: {e}")
            continue
        if not isinstance(args, dict) or not isinstance(args.get("model"), str):
            out.append(f"{name}: model.json must be an object naming a `model`")
            continue
        if args.get("tensor_parallel_size", 1) != m.tensor_parallel:
            out.append(f"{name}: tensor_parallel_size {args.get('tensor_parallel_size', 1)} "
                       f"but the pool's tensor_parallel is {m.tensor_parallel}")
        if args.get("max_num_seqs") != m.saturation_batch:
            out.append(f"{name}: max_num_seqs {args.get('max_num_seqs')} but the pool's "
                       f"saturation_batch is {m.saturation_batch}")
        if not 0 < args.get("gpu_memory_utilization", 0.9) <= 1:
            out.append(f"{name}: gpu_memory_utilization must be in (0, 1]")
        engines = 0
        for g in engine.instance_group:
            if g.kind == mc.ModelInstanceGroup.KIND_GPU and m.tensor_parallel == 1 and g.gpus:
                gpus = list(g.gpus)  # one engine per listed GPU (count per GPU)
                if g.count != 1:
                    out.append(f"{name}: count {g.count} puts several engines on one GPU")
            elif g.kind == mc.ModelInstanceGroup.KIND_MODEL and g.count == 1:
                gpus = list(range(m.tensor_parallel))  # vLLM takes the first GPUs it sees
            else:
                out.append(f"{name}: instance_group must be KIND_GPU with `gpus` (TP 1) or "
                           "one KIND_MODEL instance (the backend refuses KIND_GPU for TP > 1)")
                continue
            engines += len(gpus) if g.kind == mc.ModelInstanceGroup.KIND_GPU else 1
            for gpu in gpus:
                if not 0 <= gpu < GPUS_PER_NODE or gpu in owner:
                    out.append(f"{name}: GPU {gpu} is out of the node or already "
                               f"{owner.get(gpu, 'used')}'s")
                owner[gpu] = name
        if engines != m.instances:
            out.append(f"{name}: {engines} engines but the pool's instances is {m.instances}")
    return out


def test_the_shipped_example_is_consistent():
    assert problems(EXAMPLE) == []


def test_the_pool_file_loads_as_a_real_time_pool():
    pool = load_pool(str(EXAMPLE / "pool.yaml"))
    assert pool.family == "llama3-vllm" and pool.names == ["llama3-3b", "llama3-8b", "llama3-70b"]
    assert pool.time_scale == 1.0
    assert {m.name: m.tensor_parallel for m in pool.models}["llama3-70b"] == 4
    assert sum(m.instances * m.tensor_parallel for m in pool.models) == GPUS_PER_NODE
    assert PoolSpec.from_json(pool.to_json()) == pool
    # the figures the emulated llama3 pool cites, for the same models (only saturation_batch
    # and batch_slowdown differ: the emulation scales the batch down 4x)
    emulated = {m.name: m for m in load_pool("llama3").models}
    for m in pool.models:
        e = emulated[m.name]
        assert (m.params_b, m.ttft_ms, m.prefill_ms_per_token, m.tpot_ms, m.tensor_parallel) == \
            (e.params_b, e.ttft_ms, e.prefill_ms_per_token, e.tpot_ms, e.tensor_parallel)


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _edit_text(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _edit_pool(path: Path, model: str, **changes) -> None:
    data = yaml.safe_load(path.read_text())
    next(m for m in data["models"] if m["name"] == model).update(changes)
    path.write_text(yaml.safe_dump(data))


BREAKAGES = {
    "tensor_parallel": lambda r, p: _edit_json(
        r / "llama3-70b-vllm/1/model.json", tensor_parallel_size=2),
    "max_num_seqs": lambda r, p: _edit_pool(p, "llama3-8b", saturation_batch=64),
    "missing": lambda r, p: shutil.rmtree(r / "llama3-3b-vllm"),
    "not the contract": lambda r, p: _edit_text(
        r / "llama3-8b/config.pbtxt", "TYPE_INT32", "TYPE_INT64"),
    "GPU 4": lambda r, p: _edit_text(r / "llama3-8b-vllm/config.pbtxt", "6, 7", "4, 7"),
    "engines but": lambda r, p: _edit_pool(p, "llama3-70b", instances=2),
    "differs": lambda r, p: (r / "llama3-70b/1/model.py").write_text("x = 1\n"),
    "does not compile": lambda r, p: (r / "llama3-8b/1/model.py").write_text("def f(:\n"),
    "does not parse": lambda r, p: _edit_text(
        r / "llama3-3b/config.pbtxt", 'backend: "python"', 'backend: "python'),
    "MAX_IN_FLIGHT": lambda r, p: _edit_pool(p, "llama3-3b", instances=1),
}


@pytest.mark.parametrize("expected", BREAKAGES)
def test_each_check_fails_on_a_broken_copy(tmp_path, expected):
    copy = tmp_path / "vllm-pool"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    BREAKAGES[expected](copy / "model_repository", copy / "pool.yaml")
    found = problems(copy)
    assert any(expected in p for p in found), found


# --- the adapter's model.py against a fake triton_python_backend_utils ----------------------

def fake_pb_utils() -> types.ModuleType:
    """The part of Triton's Python-backend module the adapter uses. `pb.engine(request)`
    answers BLS requests (a list of responses); `pb.bls` records them."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL = FINAL
    pb.bls = []
    pb.logged = []

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message, code=None):
            self._message = message

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self._outputs, self._error = list(output_tensors), error

        def output_tensors(self):
            return self._outputs

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    class InferenceRequest:
        def __init__(self, model_name, requested_output_names, inputs, **_):
            self.model_name, self.requested = model_name, list(requested_output_names)
            self._inputs = list(inputs)

        def inputs(self):
            return self._inputs

        def exec(self, decoupled=False):
            assert decoupled, "the vLLM model is decoupled: BLS must say so"
            pb.bls.append(self)
            return iter(pb.engine(self))

    class Logger:
        @staticmethod
        def log_error(message):
            pb.logged.append(message)

    def by_name(tensors, name):
        return next((t for t in tensors if t.name() == name), None)

    pb.Tensor, pb.TritonError, pb.InferenceResponse = Tensor, TritonError, InferenceResponse
    pb.InferenceRequest, pb.Logger = InferenceRequest, Logger
    pb.TritonModelException = type("TritonModelException", (Exception,), {})
    pb.get_input_tensor_by_name = lambda request, name: by_name(request.inputs(), name)
    pb.get_output_tensor_by_name = lambda response, name: by_name(response.output_tensors(), name)
    return pb


class Sender:
    def __init__(self):
        self.sent = []

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))


class Request:
    """A request as Triton hands it to the adapter: [batch, 1] tensors, a response sender."""

    def __init__(self, pb, prompts, stage, output_tokens):
        rows = len(prompts)
        self._inputs = [
            pb.Tensor("prompt",
                      np.array([p.encode() for p in prompts], np.object_).reshape(rows, 1)),
            pb.Tensor("stage", np.array([stage.encode()] * rows, np.object_).reshape(rows, 1)),
            pb.Tensor("output_tokens", np.full((rows, 1), output_tokens, np.int32)),
        ]
        self.sender = Sender()

    def inputs(self):
        return self._inputs

    def get_response_sender(self):
        return self.sender


@pytest.fixture
def adapter(monkeypatch):
    """The llama3-8b adapter, initialized from its own config.pbtxt (as the JSON Triton
    passes a Python model), with the fake module in place of Triton's."""
    pb = fake_pb_utils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in examples/
    spec = importlib.util.spec_from_file_location(
        "vllm_adapter", EXAMPLE / "model_repository/llama3-8b/1/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = parse_config(EXAMPLE / "model_repository/llama3-8b/config.pbtxt")
    model = module.TritonPythonModel()
    model.initialize({"model_name": "llama3-8b", "model_config": json.dumps(
        json_format.MessageToDict(config, preserving_proto_field_name=True))})
    template = config.parameters["PROMPT_TEMPLATE"].string_value
    yield model, pb, template
    model.finalize()


def engine_answering(pb, text: str, tokens: int):
    """A vLLM model's non-streaming answer: one response with the outputs, then (as a
    decoupled model may send) an empty final one."""
    def engine(request):
        return [pb.InferenceResponse(output_tensors=[
                    pb.Tensor("text_output", np.array([text.encode()], np.object_)),
                    pb.Tensor("num_output_tokens", np.array([tokens], np.uint32))]),
                pb.InferenceResponse()]
    return engine


def test_the_adapter_maps_a_stage_to_a_vllm_request_and_back(adapter):
    model, pb, template = adapter
    pb.engine = engine_answering(pb, "4", 1)
    requests = [Request(pb, ["What is 2+2?"], "draft", 96),
                Request(pb, ["Say A.", "Say B."], "critique", 5)]
    assert model.execute(requests) is None  # answered through the response senders
    model.finalize()  # waits for the worker threads

    assert [r.model_name for r in pb.bls] == ["llama3-8b-vllm"] * 3
    first = pb.bls[0]
    inputs = {t.name(): t.as_numpy() for t in first.inputs()}
    assert set(inputs) <= set(VLLM_INPUTS) and set(first.requested) <= set(VLLM_OUTPUTS)
    for name, array in inputs.items():
        assert array.dtype == NUMPY[VLLM_INPUTS[name]] and array.shape == (1,), name
    assert inputs["text_input"][0].decode() == template.replace("{prompt}", "What is 2+2?")
    assert inputs["text_input"][0].decode().startswith("<|start_header_id|>user")
    assert json.loads(inputs["sampling_parameters"][0]) == {"max_tokens": 96, "temperature": 0}
    assert inputs["exclude_input_in_output"].tolist() == [True]
    assert json.loads(pb.bls[2].inputs()[1].as_numpy()[0])["max_tokens"] == 5

    for request, rows in zip(requests, (1, 2), strict=True):
        [(response, flags)] = request.sender.sent
        assert flags == FINAL and not response.has_error()
        out = {t.name(): t.as_numpy() for t in response.output_tensors()}
        assert out["text"].shape == (rows, 1) and out["text"].dtype == np.object_
        assert out["text"].reshape(-1).tolist() == [b"4"] * rows
        assert out["completion_tokens"].dtype == np.int32
        assert out["completion_tokens"].reshape(-1).tolist() == [1] * rows


def test_an_engine_error_reaches_the_caller_as_an_error(adapter):
    model, pb, _ = adapter
    pb.engine = lambda r: [pb.InferenceResponse(error=pb.TritonError("CUDA out of memory"))]
    request = Request(pb, ["Hello"], "draft", 8)
    model.execute([request])
    model.finalize()
    [(response, flags)] = request.sender.sent
    assert flags == FINAL and response.has_error()
    assert "llama3-8b-vllm" in response.error().message()
    assert "CUDA out of memory" in response.error().message()
