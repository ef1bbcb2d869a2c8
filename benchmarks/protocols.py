"""Named protocols: presets of dataset(s), schedule and image size.

The thesis settings (CUB, Stanford Dogs, Cars-196, Flowers-102), offline ones that run on
the real data in ``../shared/data`` (``$LRBENCH_DATA``), and synth-fg ones that need no
files. A protocol is built into an Avalanche benchmark with :func:`build_protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from benchmarks.errors import unknown_name


@dataclass(frozen=True)
class Protocol:
    """A named stream: class-incremental over ``datasets[0]`` or lifelong over all."""

    name: str
    kind: str  # "class_incremental" | "lifelong"
    datasets: tuple[str, ...]
    schedule: str | None = None
    image_size: int = 224
    order: str | int = "seed"
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def spec(self) -> dict[str, Any]:
        """The fields of the matrix's scenario this protocol presets (``ScenarioSpec``)."""
        out: dict[str, Any] = {"name": self.name, "image_size": self.image_size,
                               "dataset_kwargs": dict(self.dataset_kwargs)}
        if self.kind == "class_incremental":
            out.update(dataset=self.datasets[0], schedule=self.schedule, order=self.order)
        else:
            out["datasets"] = list(self.datasets)
        return out

    def build(self, root: Any = None, wrap: Any = None, info_only: bool = False,
              seed: int = 0) -> Any:
        """The Avalanche benchmark of this protocol, reading real data from ``root``
        (``wrap``, ``info_only``: see ``benchmarks.streams.class_incremental``); an
        ``order`` of ``seed`` draws the class order from ``seed``."""
        from benchmarks.streams import class_incremental, lifelong

        if self.kind == "class_incremental":
            return class_incremental(
                self.datasets[0], self.schedule or "", root=root,
                order=seed if self.order == "seed" else self.order,
                image_size=self.image_size, dataset_kwargs=self.dataset_kwargs, wrap=wrap,
                info_only=info_only,
            )
        return lifelong(list(self.datasets), root=root, image_size=self.image_size,
                        dataset_kwargs=self.dataset_kwargs, wrap=wrap, info_only=info_only)


def _ci(name: str, dataset: str, schedule: str, description: str, **kw: Any) -> Protocol:
    return Protocol(name, "class_incremental", (dataset,), schedule, description=description, **kw)


_SYNTH_CI = {"num_classes": 60, "train_per_class": 40, "test_per_class": 20}
_SYNTH_LL = {"num_classes": 20, "train_per_class": 40, "test_per_class": 20}

PROTOCOLS: dict[str, Protocol] = {p.name: p for p in [
    # thesis settings (full datasets)
    _ci("cub-100+100", "cub200", "100+100", "CUB-200-2011, 100 base classes then 100 (thesis)"),
    _ci("cub-100+4x25", "cub200", "100+4x25", "CUB-200-2011, 100 then 4 tasks of 25 (thesis)"),
    _ci("dogs-60+60", "dogs", "60+60", "Stanford Dogs, 60 then 60 (thesis)"),
    _ci("dogs-60+4x15", "dogs", "60+4x15", "Stanford Dogs, 60 then 4 tasks of 15 (thesis)"),
    _ci("cars-100+4x24", "cars196", "100+4x24", "Stanford Cars-196, 100 then 4x24 (thesis)"),
    _ci("flowers-62+4x10", "flowers102", "62+4x10",
        "Oxford Flowers-102, 62 then 4 tasks of 10 (thesis; runs on ../shared/data)"),
    # offline, on ../shared/data
    _ci("cub-subset-50+5x10", "cub200", "50+5x10",
        "the 100-class CUB subset of ../shared/data, 50 then 5 tasks of 10"),
    Protocol("lifelong-flowers-cub-omniglot", "lifelong", ("flowers102", "cub200", "omniglot"),
             description="real lifelong stream flowers102 -> cub200 -> omniglot (../shared/data)"),
    # generated, no files needed
    _ci("synth-ci", "synth-fg", "20+4x10",
        "synth-fg birds, 60 species: 20 then 4 tasks of 10 (32 px)", image_size=32,
        dataset_kwargs=_SYNTH_CI),
    Protocol("synth-lifelong", "lifelong",
             ("synth-fg:birds", "synth-fg:flowers", "synth-fg:glyphs"), image_size=32,
             dataset_kwargs={f"synth-fg:{d}": _SYNTH_LL for d in ("birds", "flowers", "glyphs")},
             description="synth-fg domains birds -> flowers -> glyphs, 20 species each (32 px)"),
]}


def get_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (a close-match hint when unknown)."""
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, PROTOCOLS)
    return PROTOCOLS[name]


def build_protocol(name: str, root: Any = None) -> Any:
    """Shortcut: ``get_protocol(name).build(root)``."""
    return get_protocol(name).build(root)
