"""Image transforms for retrieval streams (torchvision), train and eval variants.

Real images: train = random resized crop + horizontal flip, eval = resize + centre crop
(the usual fine-grained retrieval recipe). Generated ``synth-fg`` images are already at
their size, so they are only converted and normalised (flips would change the marks'
meaning less than crops, so a flip is kept for train).
"""

from __future__ import annotations

from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_resize(image_size: int) -> int:
    """The short side images are resized to before the centre crop (256 for 224)."""
    return int(round(image_size * 256 / 224))


def retrieval_transforms(image_size: int = 224, train: bool = True, generated: bool = False) -> Any:
    """The default transform for one side (train or eval) of a stream."""
    from torchvision import transforms as T

    norm = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if generated:
        return T.Compose(([T.RandomHorizontalFlip()] if train else []) + norm)
    if train:
        return T.Compose([T.RandomResizedCrop(image_size, scale=(0.5, 1.0)),
                          T.RandomHorizontalFlip(), *norm])
    return T.Compose([T.Resize(eval_resize(image_size)), T.CenterCrop(image_size), *norm])
