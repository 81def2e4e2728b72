"""The local embedders, with their real models: the default (all-MiniLM-L6-v2 int8 on
onnxruntime) loads from the installed wheels with no network, gives unit vectors that rank a
paraphrase above an unrelated text, and the previous USE model stays selectable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from keel.ledger import BadInput
from keel.memory import embedders

PAIRS = [
    "What is the name of the dog I brought home?",
    "I adopted a puppy last week and called him Biscuit.",
    "The quarterly tax filing for the company is due on the fifteenth.",
]

# A child process in which any socket connection fails, a fresh HOME (no model cache) and
# the Hugging Face hub told to stay offline: the default model must still load and embed.
NO_NETWORK = """
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled in this test")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from keel.memory import embedders
model = embedders.load("local")
v = model.embed(["an offline sentence", "another one"])
print(json.dumps({"name": model.name, "shape": list(v.shape)}))
"""


@pytest.fixture(scope="module")
def default():
    return embedders.load("local")


def test_default_loads_with_no_network(tmp_path):
    env = dict(os.environ, HOME=str(tmp_path), HF_HUB_OFFLINE="1", XDG_CACHE_HOME=str(tmp_path))
    env.pop("KEEL_EMBEDDER", None)
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no onnxruntime warnings on stderr
    assert json.loads(out.stdout) == {"name": "local:minilm-l6-int8", "shape": [2, 384]}


def test_default_is_minilm_with_unit_vectors(default):
    assert default.name == "local:minilm-l6-int8"
    assert embedders.load("local:minilm-l6-int8") is default  # one instance per process
    v = default.embed([*PAIRS, ""])
    assert v.shape == (4, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert default.embed([]).shape == (0, 384)
    # a batch gives the same vectors as one text at a time (order kept, padding harmless)
    one = np.stack([default.embed([t])[0] for t in PAIRS])
    assert np.allclose(one, v[:3], atol=1e-4)


@pytest.mark.parametrize("spec", ["local", "local:use-m3"])
def test_paraphrase_scores_above_unrelated(spec):
    v = embedders.load(spec).embed(PAIRS)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1
    assert v[1] @ v[0] > v[1] @ v[2] + 0.1


def test_use_m3_still_selectable_and_named_apart(default):
    use = embedders.load("local:use-m3")
    assert use.name == "local:use-m3" != default.name
    v = use.embed(PAIRS)
    assert v.shape == (3, 512)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_unknown_spec_is_bad_input_in_one_sentence():
    with pytest.raises(BadInput) as err:
        embedders.load("local:no-such-model")
    message = str(err.value)
    assert "'local:no-such-model' is not an embedder" in message
    assert "local:minilm-l6-int8" in message and "local:use-m3" in message
    assert "\n" not in message and message.count(". ") == 0
