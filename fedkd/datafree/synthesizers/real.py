"""Not data-free: batches of real images, for distillation on real data.

Two users: the data-driven KD reference of ``fedkd-distill`` (``synthesizer=real_kd`` on the
training split), whose accuracy is the ceiling a data-free method is measured against, and the
federated server of FedDF (``strategy=feddf``), which distils on its unlabeled proxy images
(``proxy_size``). Either way the distiller trains the student exactly as with a synthesizer (same
loop, same number of student steps, loss against the teacher's logits only); the source keeps the
images alone, so no label can reach the student.

One reference reads labels on purpose: ``labelled: true`` (``strategy=fedftg_labelled_proxy``) serves
each image with its label, which a label-weighted teacher (FedFTG's) uses to weight its members, as it
does for a generated sample and the label it was generated for. The student's loss still sees the
teacher's logits only. It measures what FedFTG's generator costs against real images of the task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fedkd.data.datasets import Split
from fedkd.data.specs import DatasetSpec
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.errors import ConfigError
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import NonNegativeInt, Supplied

log = logging.getLogger(__name__)


class RealDataSource(Synthesizer):
    """Serves shuffled batches of real images (epoch after epoch); no label unless ``labelled``.

    ``train``: the images, as a tensor ``(N, C, H, W)`` or a :class:`Split` whose labels are dropped
    here unless ``labelled`` (then it must be a :class:`Split`, and :meth:`sample` returns each
    image's label for the teacher's weighting). Entry points pass it to a synthesizer that says
    :attr:`needs_real_images`.
    """

    needs_real_images = True  # entry points pass real images as ``train``: see real_images_for

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        train: Supplied[Split | torch.Tensor | None] = None,
        seed: NonNegativeInt = 0,
        labelled: bool = False,
        *,
        student: StudentNode = None,
    ) -> None:
        super().__init__(spec, device, student=student)
        images = train.x if isinstance(train, Split) else train
        if images is None or len(images) == 0:
            raise ValueError("RealDataSource needs a non-empty set of images")
        if labelled and not isinstance(train, Split):
            raise ConfigError("synthesizer.labelled=true needs labelled real images and these carry none "
                              "(proxy_path is unlabeled); use proxy_size=<n>, or labelled=false")
        self.images = images.to(self.device)
        # Without ``labelled`` the labels stop here: nothing downstream can read them.
        self.labels = train.y.to(self.device) if labelled else None
        self._rng = torch.Generator().manual_seed(seed)
        self._order = torch.randperm(len(images), generator=self._rng)
        self._pos = 0

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The base state plus the shuffling generator, the current order and position in it."""
        return {**super().state_dict(), "rng": self._rng.get_state(), "order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self._rng.set_state(state["rng"])
        self._order, self._pos = state["order"].clone(), int(state["pos"])

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._pos + n > len(self._order):  # next epoch: reshuffle
            self._order, self._pos = torch.randperm(len(self.images), generator=self._rng), 0
        idx = self._order[self._pos : self._pos + n].to(self.device)
        self._pos += n
        return self.images[idx], None if self.labels is None else self.labels[idx]


def needs_real_images(factory: Any) -> bool:
    """Whether a synthesizer class or factory (a Hydra partial) distils on real images."""
    return bool(getattr(getattr(factory, "func", factory), "needs_real_images", False))


def real_images_for(factory: Any, images: torch.Tensor | Split | None, key: str, remedy: str) -> dict[str, Any]:
    """The keyword arguments that hand ``images`` to ``factory`` (configured at ``key``): ``{"train":
    images}`` when it distils on real images, else nothing -- and a warning when images were set aside
    for it in vain. A one-line :class:`ConfigError` ending in ``remedy`` when it needs them and there
    are none."""
    if not needs_real_images(factory):
        if images is not None:
            log.warning("%s does not distil on real images: the %d images set aside for it go unused", key, len(images))
        return {}
    if images is None or len(images) == 0:
        raise ConfigError(f"{key} distils on real images and there are none; {remedy}")
    return {"train": images}
