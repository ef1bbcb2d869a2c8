"""Writes bninception_reference.json from the PyPI package pretrainedmodels 0.7.4 (run by hand;
the tests read only the JSON): every state-dict key and shape of its BNInception, and the
globally max-pooled features it computes for two fixed inputs under the deterministic weights
of ``tests/test_bninception.py::reference_state``. pretrainedmodels imports ``six`` without
declaring it::

    pip install --no-deps --target /tmp/pm pretrainedmodels==0.7.4 munch six
    PYTHONPATH=/tmp/pm:. python tests/data/make_bninception_reference.py
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
from pathlib import Path

import pretrainedmodels
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_bninception import reference_input, reference_state  # noqa: E402

net = pretrainedmodels.bninception(pretrained=None).eval()
shapes = {k: list(v.shape) for k, v in net.state_dict().items()}
net.load_state_dict(reference_state(shapes))
with torch.no_grad():
    pooled = torch.amax(net.features(reference_input()), dim=(2, 3))
source = inspect.getsource(sys.modules[type(net).__module__])
out = {"package": f"pretrainedmodels {pretrainedmodels.__version__}",
       "source_sha256": hashlib.sha256(source.encode()).hexdigest(),
       "settings": pretrainedmodels.pretrained_settings["bninception"]["imagenet"],
       "shapes": shapes,
       "max_pooled": [[float(f"{v:.6g}") for v in row] for row in pooled.tolist()]}
(Path(__file__).parent / "bninception_reference.json").write_text(json.dumps(out) + "\n")
print("wrote", len(shapes), "shapes")
