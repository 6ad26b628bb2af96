"""Generative pseudo replay (PRE-DFKD: Binici et al., AAAI 2022, arXiv 2201.03019) over any synthesizer.

The generator of an adversarial data-free method drifts: it follows the student's current
weaknesses, and the student forgets what it learnt on earlier samples (its accuracy peaks, then
degrades). PRE-DFKD rehearses the student on earlier synthetic samples without storing them: a VAE
learns the distribution of the samples seen so far and the student is replayed samples it decodes.

:class:`PseudoReplaySynthesizer` wraps a *base* synthesizer (DFAD, the conditional one, RDSKD, ...)
and changes only what is sampled. Per :meth:`~PseudoReplaySynthesizer.synthesize` call:

1. the base's own synthesis step (generator update);
2. ``vae_steps`` VAE updates, each on ``vae_batch_size`` samples: fresh base samples, plus a
   ``vae_replay_share`` of samples decoded by the frozen replay decoder (the VAE rehearses its own
   memory, so it keeps the old distribution while it learns the new one). The objective, made for
   synthetic data, is ``L1(x_rec, x) + teacher_weight * L1(T(x_rec), T(x)) + kl_weight * KL``;
3. every ``refresh_every`` calls, the replay decoder becomes a frozen copy of the VAE's decoder.

:meth:`~PseudoReplaySynthesizer.sample` then gives ``n - k`` fresh base samples and ``k =
round(replay_share * n)`` decoded from ``z ~ N(0, I)`` by the frozen decoder (none before the first
refresh: an untrained VAE's samples are noise).

Defaults follow the authors' code (github.com/kuluhan/PRE-DFKD): the student batch holds ``B``
novel and ``B/8`` memory samples (``replay_share = 1/9``); the VAE is trained on ``B/2`` novel plus
``B/8`` memory samples (``vae_replay_share = 0.2``) in 4 of every generator step's student steps
(``vae_steps = 4``), with Adam at the generator's rate / 40 (``0.02 / 40 = 5e-4``), L1 for both
reconstruction terms and a KL weight of ``1e-5``. Choices where this code differs, and why:

- Replay comes from a *frozen copy* of the decoder, refreshed every ``refresh_every`` calls. The
  authors replay from the live VAE; with ``refresh_every=1`` (the default) this is the same, since
  here the VAE only changes inside ``synthesize``. Larger values keep a slower-moving memory (e.g.
  ``iterations_per_epoch`` for one refresh per epoch).
- The student batch keeps the distiller's size: replayed samples take the place of new ones.
- The authors also take one Adam step on the replay codes toward confident, class-balanced teacher
  outputs; it needs the teacher at sampling time and is left out (codes are plain ``N(0, I)``).

Labels: a conditional base gives the labels its samples were generated for; replayed samples have
none, so a batch that holds replayed samples comes with ``None`` labels (the distiller then skips
its label cross-entropy, an ensemble teacher its label weighting, for that batch).

Config: ``conf/synthesizer/replay_<base>.yaml`` composes the base method's YAML as ``synthesizer.base``
(``defaults: [/synthesizer@base: dfad, _self_]``); under FedFTG, ``synthesizer@strategy.synthesizer=replay_conditional
synthesizer@strategy.synthesizer.base=fedftg`` keeps the strategy's server settings for the base.

Delegation (:class:`~fedkd.datafree.synthesizers.wrapper.SynthesizerWrapper`): the generator, the
label prior, :meth:`student_terms` and the student's recipe are the base's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.datafree.losses import gaussian_kl, teacher_agreement, vae_reconstruction
from fedkd.datafree.recipe import StudentNode
from fedkd.datafree.synthesizers.base import Synthesizer
from fedkd.datafree.synthesizers.wrapper import SynthesizerWrapper
from fedkd.datafree.teacher import as_teacher
from fedkd.datafree.vae import ConvDecoder, ConvVAE, memory_bytes
from fedkd.errors import ConfigError
from fedkd.utils.device import autocast
from fedkd.utils.option_schema import checked
from fedkd.utils.option_types import (
    AdamBetas,
    Forward,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ShareBelowOne,
    Supplied,
)


def frozen_decoder(decoder: ConvDecoder) -> ConvDecoder:
    """A frozen copy of ``decoder`` whose BatchNorm layers normalise every batch with its own
    statistics (their running statistics dropped).

    Why: with PRE-DFKD's small KL weight the codes the decoder is trained on (the encoder's) are
    far from ``N(0, I)``, and running statistics collected on them make decoded prior samples
    collapse to mostly one teacher class (docs/design_notes.md#pseudo-replay-decoder-statistics); batch
    statistics -- as DFAD's generator samples in train mode -- give replay samples of every class.
    """
    memory = copy.deepcopy(decoder).eval().requires_grad_(False)
    for module in memory.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = module.running_var = module.num_batches_tracked = None
    return memory


class PseudoReplaySynthesizer(SynthesizerWrapper):
    """A base synthesizer whose student batches mix in samples replayed by a VAE.

    Args:
        spec, device, student: dataset spec, device and the wrapper's own student recipe (its YAML
            interpolates the base's ``student`` node).
        base: the wrapped synthesizer, built or as ``base(spec=..., device=...) -> Synthesizer``
            (Hydra's partial of ``conf/synthesizer/<method>.yaml``).
        replay_share: fraction of each student batch decoded by the replay decoder, in [0, 1).
        refresh_every: ``synthesize`` calls between refreshes of the frozen replay decoder.
        vae: ``{"latent_dim": .., "nf": ..}`` of the :class:`~fedkd.datafree.vae.ConvVAE`.
        vae_steps, vae_batch_size, vae_lr, vae_betas: VAE updates per call and their Adam settings.
        vae_replay_share: fraction of each VAE batch decoded by the replay decoder, in [0, 1).
        teacher_weight, kl_weight: weights of the teacher-agreement and KL terms.
        **base_overrides: other keys go to ``base`` (``+synthesizer.batch_size=64`` reaches the base
            method as ``synthesizer.base.batch_size=64`` does); only with an unbuilt ``base``.
    """

    @checked("synthesizer")
    def __init__(
        self,
        spec: Supplied[DatasetSpec],
        device: Supplied[torch.device | str] = "cpu",
        base: Synthesizer | Callable[..., Synthesizer] | None = None,
        replay_share: ShareBelowOne = 1 / 9,
        refresh_every: PositiveInt = 1,
        vae: Mapping[str, Any] | None = None,
        vae_steps: PositiveInt = 4,
        vae_batch_size: PositiveInt = 128,
        vae_replay_share: ShareBelowOne = 0.2,
        vae_lr: PositiveFloat = 5e-4,
        vae_betas: AdamBetas = (0.9, 0.999),
        teacher_weight: NonNegativeFloat = 1.0,
        kl_weight: NonNegativeFloat = 1e-5,
        *,
        student: StudentNode = None,
        **base_overrides: Annotated[Any, Forward(node="base")],
    ) -> None:
        super().__init__(spec, device, base, base_overrides, student=student)
        self.replay_share, self.refresh_every = float(replay_share), int(refresh_every)
        self.vae_steps, self.vae_batch_size = int(vae_steps), int(vae_batch_size)
        self.vae_replay_share = float(vae_replay_share)
        self.weights = {"teacher": float(teacher_weight), "kl": float(kl_weight)}
        try:
            self.vae = ConvVAE(spec, **dict(vae or {})).to(self.device)
        except TypeError as exc:
            raise ConfigError(f"synthesizer.vae takes latent_dim and nf ({exc}); fix synthesizer.vae") from None
        self._params = list(self.vae.parameters())
        self.optimizer = torch.optim.Adam(self._params, lr=vae_lr, betas=tuple(vae_betas))
        self.memory: ConvDecoder | None = None  # the frozen replay decoder; None until the first refresh
        self.calls = 0  # synthesize() calls so far (the refresh schedule)
        self.replayed = 0  # samples the replay decoder produced so far

    # ------------------------------------------------------------------ delegated to the base
    @property
    def samples_generated(self) -> int:
        """The base's generated samples plus the replayed ones."""
        return self.base.samples_generated + self.replayed

    # --------------------------------------------------------------------------- replay
    def _replay_count(self, n: int) -> int:
        """Replayed samples in a batch of ``n``: none before the first refresh, and at least one
        new sample per batch."""
        if self.memory is None:
            return 0
        return min(round(self.replay_share * n), n - 1)

    @torch.no_grad()
    def _replay(self, n: int) -> torch.Tensor:
        with autocast(self.device):
            x = self.memory.sample(n)
        self.replayed += n
        return x

    def synthesize(self, teacher: nn.Module, student: nn.Module) -> dict[str, float]:
        """The base's step, then ``vae_steps`` VAE updates on fresh base samples (plus replay), then
        the scheduled refresh of the frozen replay decoder. Returns the base's losses and the VAE's
        (``vae_loss``, ``vae_rec``, ``vae_teacher``, ``vae_kl``: the last step's)."""
        row = dict(self.base.synthesize(teacher, student))
        teacher = as_teacher(teacher)
        self.vae.train()
        k = 0  # replayed samples per VAE batch: the VAE rehearses its own memory once it has one
        if self.memory is not None:
            k = min(round(self.vae_replay_share * self.vae_batch_size), self.vae_batch_size - 1)
        terms: dict[str, torch.Tensor] = {}
        for _ in range(self.vae_steps):
            with torch.no_grad():
                x = self.base.sample(self.vae_batch_size - k)[0]
                if k:
                    x = torch.cat([x, self._replay(k).to(x.dtype)])
            with autocast(self.device):
                with torch.no_grad():
                    target_logits = teacher(x)
                recon, mu, logvar = self.vae(x)
                terms = {"rec": vae_reconstruction(recon, x), "kl": gaussian_kl(mu, logvar)}
                if self.weights["teacher"] > 0:
                    # Gradients reach the VAE through the (frozen) teacher's input only.
                    terms["teacher"] = teacher_agreement(teacher(recon), target_logits)
                loss = terms["rec"] + sum(self.weights[name] * v for name, v in terms.items() if name != "rec")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=self._params)
            self.optimizer.step()
        self.calls += 1
        if self.calls % self.refresh_every == 0:
            self.memory = frozen_decoder(self.vae.decoder)
        row["vae_loss"] = loss.item()
        row.update({f"vae_{name}": v.item() for name, v in terms.items()})
        return row

    @torch.no_grad()
    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n - k`` fresh base samples followed by ``k = round(replay_share * n)`` replayed ones;
        labels only when the batch holds no replayed sample (see the module docstring)."""
        k = self._replay_count(n)
        x, y = self.base.sample(n - k)
        if not k:
            return x, y
        return torch.cat([x, self._replay(k).to(x.dtype)]), None

    def preview(self, n: int = 64) -> torch.Tensor:
        """A batch as :meth:`sample` mixes it, not counted in :attr:`samples_generated`."""
        k = self._replay_count(n)
        x = self.base.preview(n - k)
        if not k:
            return x
        replayed = self.replayed
        out = torch.cat([x, self._replay(k).to(x.dtype)])
        self.replayed = replayed
        return out

    def memory_bytes(self) -> int:
        """Bytes of the generative memory: the VAE's parameters and buffers plus the frozen replay
        decoder's (the Adam moments of the VAE, training state like a generator's, are not counted)."""
        return memory_bytes(self.vae) + (memory_bytes(self.memory) if self.memory is not None else 0)

    # ---------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        """The base's state, the VAE, its Adam state, the frozen replay decoder and the counters."""
        return {
            "base": self.base.state_dict(),
            "vae": {k: v.detach().cpu() for k, v in self.vae.state_dict().items()},
            "vae_optimizer": self.optimizer.state_dict(),
            "memory": None if self.memory is None else {
                k: v.detach().cpu() for k, v in self.memory.state_dict().items()
            },
            "calls": int(self.calls),
            "replayed": int(self.replayed),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.base.load_state_dict(state["base"])
        self.vae.load_state_dict(state["vae"])
        self.optimizer.load_state_dict(state["vae_optimizer"])
        self.memory = None
        if state["memory"] is not None:
            self.memory = frozen_decoder(self.vae.decoder)
            self.memory.load_state_dict(state["memory"])
        self.calls, self.replayed = int(state["calls"]), int(state["replayed"])
