"""A small convolutional VAE: the generative memory of pseudo replay (PRE-DFKD, Binici et al. 2022).

:class:`~fedkd.datafree.synthesizers.replay.PseudoReplaySynthesizer` trains it on the synthetic
samples a base method produces and replays samples decoded from ``N(0, I)`` to the student, so no
sample is stored. It works in the classifier's *normalised* input space (whatever range the base
generator's samples have), so the decoder ends in a plain convolution: no ``tanh``/``sigmoid``
that would clip standardised pixels.

Shape: the encoder halves the image twice (two stride-2 4x4 convs: 28 -> 14 -> 7, 32 -> 16 -> 8),
then linear layers give the mean and log-variance of the latent code. The decoder mirrors the
DCGAN-style generators of :mod:`fedkd.datafree.generators` (linear layer to a ``ceil(size/4)`` map,
two nearest-neighbour upsamplings each followed by a 3x3 conv) and crops to the image size. The
sizes come from the :class:`~fedkd.data.specs.DatasetSpec` (channels, image size).

Size: with the defaults (``nf=32``, ``latent_dim=32``) about 0.36 M parameters (1.4 MB) for 28x28
grey images and 0.45 M (1.8 MB) for 32x32 colour; the authors' networks (128 channels, a
1000-dimensional code) are ~10x larger, sized for CIFAR-100 and ResNets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``mu + sigma * eps`` with ``eps ~ N(0, I)``: a differentiable draw from ``N(mu, sigma^2)``."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class ConvDecoder(nn.Module):
    """Codes ``(N, latent_dim)`` -> images ``(N, C, H, W)``: the part pseudo replay keeps a frozen
    copy of (the replay source)."""

    def __init__(self, spec: DatasetSpec, latent_dim: int, nf: int) -> None:
        super().__init__()
        self.latent_dim, self.nf, self.image_size = latent_dim, nf, spec.image_size
        self.init_size = math.ceil(spec.image_size / 4)
        self.fc = nn.Linear(latent_dim, 2 * nf * self.init_size**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * nf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * nf, nf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(nf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(nf, spec.channels, 3, 1, 1),  # linear output: normalised pixels are unbounded
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(len(z), 2 * self.nf, self.init_size, self.init_size)
        s = self.image_size
        return self.body(h)[..., :s, :s]  # ceil(s / 4) * 4 >= s: crop the few extra pixels

    def sample(self, n: int) -> torch.Tensor:
        """``n`` images decoded from ``z ~ N(0, I)`` (on the decoder's device; gradients as the
        caller's context says)."""
        return self(torch.randn(n, self.latent_dim, device=self.fc.weight.device))


def memory_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (BatchNorm statistics included)."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


class ConvVAE(nn.Module):
    """Encoder ``x -> (mu, logvar)``, decoder ``z -> x``, sized from the dataset spec.

    Args:
        spec: the dataset spec (channels, image size).
        latent_dim: size of the latent code.
        nf: channels of the first encoder conv (the second has ``2 * nf``; the decoder mirrors it).
    """

    def __init__(self, spec: DatasetSpec, latent_dim: int = 32, nf: int = 32) -> None:
        super().__init__()
        if latent_dim < 1 or nf < 1:
            raise ConfigError(
                f"synthesizer.vae latent_dim and nf must be >= 1 (got latent_dim={latent_dim}, nf={nf}); "
                "set e.g. latent_dim=32 nf=32"
            )
        if spec.image_size < 8:
            raise ConfigError(
                f"the replay VAE needs images of at least 8x8 pixels (got {spec.image_size}); use another dataset"
            )
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(spec.channels, nf, 4, 2, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(nf, 2 * nf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * nf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Flatten(),
        )
        enc_size = 2 * nf * (spec.image_size // 4) ** 2  # each 4x4 stride-2 conv: s -> s // 2
        self.fc_mu = nn.Linear(enc_size, latent_dim)
        self.fc_logvar = nn.Linear(enc_size, latent_dim)
        self.decoder = ConvDecoder(spec, latent_dim, nf)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z | x)``, each ``(N, latent_dim)``."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` from codes ``(N, latent_dim)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction of ``x`` through a sampled code, and the code's ``mu`` and ``logvar``."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar

    def sample(self, n: int) -> torch.Tensor:
        """``n`` images decoded from ``z ~ N(0, I)``."""
        return self.decoder.sample(n)

    def memory_bytes(self) -> int:
        """Bytes held by the parameters and buffers (BatchNorm statistics)."""
        return memory_bytes(self)
