"""timm trunks (``timm:<name>``) and the helpers every trunk's weights share: the timm
model built and cut into the stages ``model.frozen_stages`` counts (ViT tokens included)
with its weights loaded by timm's own loader; the :data:`strategies.model.FROZEN_STAGES`
row of a trunk (:func:`trunk_family`); a local weight file named ``PATH#sha256=HEX`` and
what a cell records of the weights it loaded."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from strategies.weights import TIMM_PREFIX, check_timm_name, require_timm

_TIMM_INCEPTION = ("InceptionV3", "InceptionV4", "InceptionResnetV2")

#: a timm model's children from the first of these on are its head (pooling, classifier)
_TIMM_HEAD = ("global_pool", "head", "head_drop", "fc", "fc_norm", "classifier", "classif",
              "last_linear", "head_dist")


class _VitTokens(nn.Module):
    """A ViT's first stage: patch embedding, class/distillation tokens, position embedding
    (the timm model itself, with its blocks, final norm and head taken out)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


class _TokenMap(nn.Module):
    """A ViT's last stage: the final norm, then every token as a C x T x 1 map, so the
    embedding's ``pool`` (max or avg) pools over tokens as it pools a CNN's positions."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x).transpose(1, 2).unsqueeze(-1)


def _timm_model(name: str, file: Path | None = None) -> nn.Module:
    """timm's model ``name``, randomly initialised, or with the weights of ``file`` loaded by
    timm's own pretrained loader (its filters and adaptations; the file was found or
    fetched by :mod:`strategies.weights`, so timm downloads nothing here)."""
    timm = require_timm()
    from timm.models import _registry

    kwargs: dict[str, Any] = {"pretrained": False}
    if file is not None:
        kwargs = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(file)}}
    module = getattr(_registry.model_entrypoint(name.partition(".")[0]), "__module__", "")
    if module.endswith(("vision_transformer", "deit")):
        kwargs["dynamic_img_size"] = True  # any image size (position embedding resampled)
    return timm.create_model(name, **kwargs)


def load_timm_weights(net: nn.Module, trunk: str, pretrained: str | Path) -> Path:
    """Load a local weight file, checked against its SHA-256, into timm model ``net``."""
    path, expected = parse_pretrained(pretrained)
    if not path.is_file():
        raise ValueError(f"{trunk}: weights file {str(path)!r} not found; give a local file "
                         "(timm trunks never download weights)")
    actual = sha256_of(path)
    if actual != expected:
        raise ValueError(f"{trunk}: weights file {path} has SHA-256 {actual}, expected "
                         f"{expected}; the file is corrupt or another one")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    result = net.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"{trunk}: weights file {path} does not fit the model: "
                         f"{len(missing)} missing keys {missing[:3]}, {len(unexpected)} "
                         f"unexpected keys {unexpected[:3]}")
    return path


def make_timm_trunk(trunk: str, pretrained: bool | str | Path = False
                    ) -> tuple[nn.Sequential, int]:
    """A ``timm:<name>`` trunk as stages (:data:`FROZEN_STAGES`) and its channels; weights
    from ``pretrained`` (``true``: timm's own, :mod:`strategies.weights`; or a local
    ``PATH#sha256=HEX``) are loaded into the whole timm model first."""
    return _make_timm_trunk(trunk, pretrained)[:2]


def _make_timm_trunk(trunk: str, pretrained: bool | str | Path = False
                     ) -> tuple[nn.Sequential, int, dict[str, Any] | None]:
    name = check_timm_name(trunk)
    record = None
    if pretrained is True:
        from strategies.weights import resolve

        source = resolve(trunk)
        file = source.fetch()
        net = _timm_model(name, file)
        record = weights_record(source, file)
    else:
        net = _timm_model(name)
    if pretrained and pretrained is not True:
        load_timm_weights(net, trunk, pretrained)
    channels = int(net.num_features)
    family = trunk_family(trunk, net)
    if family == "timm_vit":
        blocks, norm = list(net.blocks), net.norm
        net.blocks, net.norm = nn.Sequential(), nn.Identity()
        net.reset_classifier(0)
        return nn.Sequential(_VitTokens(net), *blocks, _TokenMap(norm)), channels, record
    children = []
    for child_name, child in net.named_children():
        if child_name in _TIMM_HEAD:
            break
        children.append(child)
    if len(children) == 1 and isinstance(children[0], nn.Sequential):
        children = list(children[0])  # inception_v4's `features`
    stages = nn.Sequential(*children)
    if family == "timm_cnn":  # ResNet and Inception layouts are known (and tested)
        _check_sequential(net, stages, trunk)
    return stages, channels, record


def _check_sequential(net: nn.Module, stages: nn.Sequential, trunk: str) -> None:
    """Refuse a timm model whose children, run in order, are not its forward_features
    (compared on one random image of the model's own input size)."""
    size = int(net.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            same = torch.allclose(stages(x), net.forward_features(x), atol=1e-5)
    except Exception:
        same = False
    finally:
        net.train(was)
    if not same:
        raise ValueError(f"{trunk}: its top-level layers do not run in sequence as its "
                         "features, so it cannot be split into stages; use a ResNet, "
                         "Inception, ViT/DeiT or another sequential timm model")


_SHA256_SUFFIX = re.compile(r"^(?P<path>.+)#sha256=(?P<hex>[0-9a-fA-F]{64})$")


def trunk_family(name: str, net: nn.Module | None = None) -> str:
    """The :data:`FROZEN_STAGES` row of trunk ``name`` (``net``: its timm model, if built)."""
    if not name.startswith(TIMM_PREFIX):
        return "resnet" if name in ("resnet18", "resnet50") else name
    kind = type(net).__name__ if net is not None else ""
    if kind == "ResNet":
        return "resnet"
    if kind in _TIMM_INCEPTION:
        return "timm_inception"
    if kind.startswith("VisionTransformer"):
        return "timm_vit"
    return "timm_cnn"


def parse_pretrained(value: str | Path) -> tuple[Path, str]:
    """``PATH#sha256=HEX`` -> (PATH, hex): how a timm trunk names its local weight file."""
    match = _SHA256_SUFFIX.match(str(value))
    if match is None:
        raise ValueError(
            f"pretrained: give a local weight file with its SHA-256 as PATH#sha256=<64 hex "
            f"digits> (sha256sum PATH prints it), got {str(value)[:80]!r}; timm trunks never "
            "download weights")
    return Path(match["path"]).expanduser(), match["hex"].lower()


def weights_record(source: Any, file: Path) -> dict[str, Any]:
    """What a cell's ``result.json`` records of the weights it loaded: their name, the file
    and its full SHA-256 (:class:`strategies.weights.WeightsSource` ``source``)."""
    from strategies.weights import sha256_of as digest

    return {"name": source.name, "file": source.file, "path": str(file),
            "sha256": digest(file), "url": source.url}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
