"""Training augmentations: what ``train.spec_augment`` builds, and which of its parts move frames.

Each kind of augmentation is registered in :data:`AUGMENTATIONS` and
declares whether it moves frames (changes the number or timing of the
frames a model sees). Whoever depends on frames staying put asks the
registry instead of guessing from key names: a soft-label archive holds a
teacher's labels for the unperturbed frames of each cut, so knowledge
distillation from an archive refuses every active augmentation that moves
them (:func:`kdasr.distill.teachers.check_augmentation_compatible`).
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping, Optional

from lhotse.dataset import SpecAugment

from kdasr.utils.registry import Registry

SECTION = "train.spec_augment"
# lhotse's SpecAugment defaults: an option the section leaves out takes these.
_LHOTSE_DEFAULTS = {"time_warp_factor": 80, "num_feature_masks": 2, "num_frame_masks": 10}


def spec_augment_from_config(cfg: Optional[Mapping[str, Any]]) -> Optional[SpecAugment]:
    """lhotse SpecAugment from the ``train.spec_augment`` section; ``None`` or ``enabled: false`` turns it off."""
    if not cfg or not cfg.get("enabled", True):
        return None
    opts = {k: v for k, v in cfg.items() if k != "enabled"}
    logging.debug("SpecAugment: %s", opts)
    return SpecAugment(**opts)


class Augmentation:
    """One kind of augmentation in the ``train.spec_augment`` section."""

    name: ClassVar[str] = ""
    #: whether it changes the number or timing of the frames the model sees
    moves_frames: ClassVar[bool] = False
    #: the option of the section that sets it (0 turns it off)
    option: ClassVar[str] = ""

    @classmethod
    def setting(cls, section: Optional[Mapping[str, Any]]) -> Optional[str]:
        """``"<key> = <value>"`` when the section turns this augmentation on, else None."""
        if not section or not section.get("enabled", True):
            return None
        value = section.get(cls.option, _LHOTSE_DEFAULTS[cls.option])
        if value is None or float(value) < 1:
            return None
        return f"{SECTION}.{cls.option} = {value}"


AUGMENTATIONS: Registry[type[Augmentation]] = Registry("augmentation", SECTION)


@AUGMENTATIONS.register("time warp")
class TimeWarp(Augmentation):
    """SpecAugment's time warping stretches the frames on either side of a random point."""

    moves_frames = True
    option = "time_warp_factor"


@AUGMENTATIONS.register("feature masks")
class FeatureMasks(Augmentation):
    """Zeroes bands of feature channels; every frame stays where it was."""

    option = "num_feature_masks"


@AUGMENTATIONS.register("frame masks")
class FrameMasks(Augmentation):
    """Zeroes runs of frames; they keep their places (and their count)."""

    option = "num_frame_masks"


def frame_moving(section: Optional[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(augmentation name, setting)`` of every active augmentation of the section that moves frames."""
    out = []
    for name in AUGMENTATIONS:
        cls = AUGMENTATIONS.get(name)
        setting = cls.setting(section) if cls.moves_frames else None
        if setting is not None:
            out.append((name, setting))
    return out
