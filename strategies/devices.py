"""CUDA random state in checkpoints, as plain tensors; CUDA's deterministic settings.

A cell resumed on a GPU must draw what the uninterrupted cell drew: dropout masks, a
strategy's noise (``fecd``'s feature estimates), synthesis seeds made on the device. So a
checkpoint holds the CUDA generators' states beside the CPU one, as
``torch.cuda.get_rng_state_all()`` gives them: a list of ``uint8`` tensors, one per device,
which ``torch.load(..., weights_only=True)`` reads (no pickled objects). Empty where CUDA
was never initialised in the process: nothing ran there, nothing to restore.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cuda_rng_state() -> list[torch.Tensor]:
    """The state of every CUDA device's generator (uint8 tensors on the CPU), or ``[]``
    when this process has not initialised CUDA (reading it would initialise it)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return []
    return [s.detach().to("cpu", torch.uint8).clone() for s in torch.cuda.get_rng_state_all()]


def set_cuda_rng_state(states: Sequence[torch.Tensor] | None) -> int:
    """Restore :func:`cuda_rng_state`'s ``states`` to the devices this process has (the
    first ones when it has fewer); returns how many were restored (0 without CUDA: a
    checkpoint written on a GPU host and resumed on a CPU one has no generator to set)."""
    if not states or not torch.cuda.is_available():
        return 0
    count = min(len(states), torch.cuda.device_count())
    for index in range(count):
        torch.cuda.set_rng_state(torch.as_tensor(states[index], dtype=torch.uint8).cpu(),
                                 device=index)
    return count


def deterministic_cuda() -> None:
    """cuDNN's deterministic algorithms, no autotuning: a cell trained on a GPU repeats
    its numbers, and a resumed one continues them (the GPU check tests this). Costs some
    speed; operations without a deterministic CUDA kernel still run (a warning, no error),
    and matmuls need ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (``tools/gpu-check.sh`` sets it)."""
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
