"""BN-Inception (Ioffe & Szegedy 2015), the backbone of the thesis and of the official FECD code.

What the two references define, and what this module takes from each:

* ``pretrainedmodels`` 0.7.4 (``pretrainedmodels/models/bninception.py``, Cadene) defines the
  network layer by layer with Caffe's names (``conv1_7x7_s2``, ``inception_3a_1x1_bn``, ...),
  the ImageNet file ``bn_inception-52deb4733.pth`` (a port of the Caffe model, "ported using
  python2") and its input convention: **BGR, 0-255, minus the per-channel mean
  (104, 117, 128), std 1**, 224 px. The package does not import cleanly on the pinned torch:
  its ``__init__`` imports ``six``, which it does not declare (with ``six`` installed by hand
  it imports and runs on torch 2.14); it is not maintained since 2018. So lrbench does not
  depend on it: the architecture is written here, and a test checks that its state-dict keys
  and shapes are those of ``pretrainedmodels``' definition (485 tensors, the classifier
  ``last_linear`` aside) and that, given the same weights, it computes the same features
  (``tests/data/bninception_reference.json``, made with pretrainedmodels 0.7.4).
* The official FECD code (cw1091293482/Deep-Incremental-Image-Retrieval,
  ``models/BN_Inception.py``) has the same layers, names and shapes, loads the same file
  (``bn_inception-52deb4733.pth``, keys not in the model dropped), pools the 1024 x 7 x 7
  map of ``inception_5b`` by **global max pooling**, and embeds with one ``Linear(1024,
  512)`` followed by L2 normalisation; its ``Embedding`` also builds a BatchNorm that
  ``forward`` never uses. Its data pipeline converts images to BGR and normalises with mean
  (104, 117, 128)/255 and std 1/255, i.e. the same input convention; it trains at 224 px
  from a 256 px resize. lrbench's ``EmbeddingNet(trunk="bninception", dim=512, pool="max")``
  is that network.

Differences, each a choice made here:

* The official code gives every BatchNorm ``momentum=0.9`` (Caffe's meaning, written in
  PyTorch's opposite convention: running statistics become 90% the last batch). Here
  BatchNorm keeps PyTorch's default 0.1, as ``pretrainedmodels`` does; with frozen BatchNorm
  statistics (``model.freeze_bn: true``, the official default ``--freeze_BN True`` and the
  thesis configs') no running statistic changes, so the two agree.
* The official code applies each ReLU in place and then reads the tensor it modified, so
  its branches see rectified values, as ``pretrainedmodels``' do; here the ReLUs are not in
  place and the rectified tensors are passed on explicitly: the same function.
* The input conversion (lrbench's images are RGB, ImageNet mean/std normalised) is the
  first operation of the first stage (:class:`BGRInput`, no parameters), so datasets,
  transforms and caches stay as they are for every trunk.
* Random initialisation (no ``pretrained``) is the official code's: Kaiming-normal
  convolutions, BatchNorm weight 1 and bias 0.
* ``pretrainedmodels`` and others that load this file report BatchNorm tensors stored as
  ``1 x C`` in it (some code squeezes them); :func:`load_bninception` squeezes a leading
  dimension of 1 when that is the only difference, and refuses anything else in one line.

Stages (``model.frozen_stages`` counts them): 0 ``conv1`` (BGR input, 7x7/2 conv, BN, ReLU,
max pool), 1 ``conv2`` (1x1 and 3x3 convs, max pool), then the ten Inception blocks
``3a 3b 3c 4a 4b 4c 4d 4e 5a 5b`` (12 stages; 1024 channels out, 7 x 7 at 224 px).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

#: pretrainedmodels' ``pretrained_settings['bninception']['imagenet']`` input convention
BGR_MEAN = (104.0, 117.0, 128.0)
#: the normalisation lrbench's transforms apply (``benchmarks.transforms``; strategies do not
#: import benchmarks, a test keeps the two equal)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNELS = 1024
#: (name, in, 1x1, 3x3 reduce, 3x3, double reduce, double, pool kind, pool proj, stride 2)
BLOCKS: tuple[tuple[str, int, int, int, int, int, int, str, int, bool], ...] = (
    ("3a", 192, 64, 64, 64, 64, 96, "avg", 32, False),
    ("3b", 256, 64, 64, 96, 64, 96, "avg", 64, False),
    ("3c", 320, 0, 128, 160, 64, 96, "max", 0, True),
    ("4a", 576, 224, 64, 96, 96, 128, "avg", 128, False),
    ("4b", 576, 192, 96, 128, 96, 128, "avg", 128, False),
    ("4c", 576, 160, 128, 160, 128, 160, "avg", 128, False),
    ("4d", 608, 96, 128, 192, 160, 192, "avg", 128, False),
    ("4e", 608, 0, 128, 192, 192, 256, "max", 0, True),
    ("5a", 1056, 352, 192, 320, 160, 224, "avg", 128, False),
    ("5b", 1024, 352, 192, 320, 192, 224, "max", 128, False),
)


class BGRInput(nn.Module):
    """lrbench's input (RGB, normalised with ImageNet's mean and std) as BN-Inception's
    (BGR, 0-255, minus :data:`BGR_MEAN`); no parameters, nothing in the state dict."""

    def __init__(self) -> None:
        super().__init__()
        # y_bgr[c] = 255 * (x_rgb[2 - c] * std[2 - c] + mean[2 - c]) - BGR_MEAN[c]
        std = torch.tensor(IMAGENET_STD[::-1]).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN[::-1]).view(1, 3, 1, 1)
        self.register_buffer("scale", 255.0 * std, persistent=False)
        self.register_buffer("shift", 255.0 * mean - torch.tensor(BGR_MEAN).view(1, 3, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) * self.scale + self.shift


def _conv_bn(owner: nn.Module, name: str, cin: int, cout: int, k: int, stride: int = 1
             ) -> None:
    """``name`` (a convolution with bias, as in the Caffe port) and ``name_bn`` on ``owner``."""
    setattr(owner, name, nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2))
    setattr(owner, f"{name}_bn", nn.BatchNorm2d(cout))


class _Stem(nn.Module):
    """Stage 0 (``conv1``: input conversion, 7x7/2, max pool) or 1 (``conv2``)."""

    def __init__(self, first: bool) -> None:
        super().__init__()
        self.first = first
        if first:
            self.input = BGRInput()
            _conv_bn(self, "conv1_7x7_s2", 3, 64, 7, stride=2)
        else:
            _conv_bn(self, "conv2_3x3_reduce", 64, 64, 1)
            _conv_bn(self, "conv2_3x3", 64, 192, 3)
        self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.relu(self.conv1_7x7_s2_bn(self.conv1_7x7_s2(self.input(x))))
        else:
            x = self.relu(self.conv2_3x3_reduce_bn(self.conv2_3x3_reduce(x)))
            x = self.relu(self.conv2_3x3_bn(self.conv2_3x3(x)))
        return self.pool(x)


class InceptionBlock(nn.Module):
    """One BN-Inception block: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3; pool (-> 1x1), each
    convolution followed by BatchNorm and ReLU, the branches concatenated. A stride-2 block
    (3c, 4e) has no 1x1 branch and an unprojected max pool."""

    def __init__(self, name: str, cin: int, c1: int, c3r: int, c3: int, cdr: int, cd: int,
                 pool: str, cp: int, stride2: bool) -> None:
        super().__init__()
        p = f"inception_{name}"
        self.names = p
        s = 2 if stride2 else 1
        if c1:
            _conv_bn(self, f"{p}_1x1", cin, c1, 1)
        _conv_bn(self, f"{p}_3x3_reduce", cin, c3r, 1)
        _conv_bn(self, f"{p}_3x3", c3r, c3, 3, stride=s)
        _conv_bn(self, f"{p}_double_3x3_reduce", cin, cdr, 1)
        _conv_bn(self, f"{p}_double_3x3_1", cdr, cd, 3)
        _conv_bn(self, f"{p}_double_3x3_2", cd, cd, 3, stride=s)
        if stride2:
            self.pool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        elif pool == "max":
            self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        else:
            self.pool = nn.AvgPool2d(3, stride=1, padding=1, ceil_mode=True,
                                     count_include_pad=True)
        if cp:
            _conv_bn(self, f"{p}_pool_proj", cin, cp, 1)
        self.has_1x1, self.has_proj = bool(c1), bool(cp)
        self.relu = nn.ReLU()
        self.out_channels = c1 + c3 + cd + (cp or cin)

    def _cbr(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self.relu(getattr(self, f"{self.names}_{name}_bn")(
            getattr(self, f"{self.names}_{name}")(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [self._cbr("1x1", x)] if self.has_1x1 else []
        out.append(self._cbr("3x3", self._cbr("3x3_reduce", x)))
        out.append(self._cbr("double_3x3_2", self._cbr("double_3x3_1",
                                                       self._cbr("double_3x3_reduce", x))))
        pooled = self.pool(x)
        out.append(self._cbr("pool_proj", pooled) if self.has_proj else pooled)
        return torch.cat(out, 1)


def bninception(init: bool = True) -> nn.Sequential:
    """BN-Inception as 12 stages (see the module docstring) producing 1024 channels;
    ``init``: the official code's random initialisation."""
    stages: list[nn.Module] = [_Stem(True), _Stem(False)]
    stages += [InceptionBlock(*spec) for spec in BLOCKS]
    net = nn.Sequential(*stages)
    if init:
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
    return net


def flat_keys(net: nn.Sequential) -> dict[str, str]:
    """``pretrainedmodels``' key (``inception_3a_1x1.weight``) -> this network's
    (``2.inception_3a_1x1.weight``), for every tensor of the state dict."""
    out = {}
    for key in net.state_dict():
        _, _, rest = key.partition(".")
        out[rest] = key
    return out


def load_bninception(net: nn.Sequential, source: str | Path | dict[str, Any]) -> None:
    """Load ``pretrainedmodels``' BN-Inception weights (a file or a state dict) into ``net``:
    every tensor but the ImageNet classifier (``last_linear``), a ``1 x C`` tensor squeezed
    to ``C``; anything missing, extra or of another shape is a one-line ``ValueError``."""
    if isinstance(source, dict):
        state = source
    else:
        state = torch.load(source, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    names = flat_keys(net)
    target = net.state_dict()
    mapped, extra, wrong = {}, [], []
    for key, value in state.items():
        if key.startswith("last_linear."):
            continue
        if key not in names:
            extra.append(key)
            continue
        want = target[names[key]].shape
        if value.shape != want and value.dim() > 1 and value.shape[0] == 1 \
                and value.squeeze(0).shape == want:
            value = value.squeeze(0)
        if value.shape != want:
            wrong.append(f"{key} {tuple(value.shape)} != {tuple(want)}")
            continue
        mapped[names[key]] = value
    missing = [k for k, v in names.items() if v not in mapped
               and not k.endswith("num_batches_tracked")]
    if extra or wrong or missing:
        raise ValueError(f"bninception: the weights do not fit the network: {len(missing)} "
                         f"missing {missing[:3]}, {len(extra)} unexpected {extra[:3]}, "
                         f"{len(wrong)} of another shape {wrong[:2]}")
    net.load_state_dict(mapped, strict=False)
