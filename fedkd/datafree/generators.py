"""Generators for data-free distillation, registered in the model registry (``kind="generator"``).

All generators map Gaussian noise (and, for the conditional one, a class label) to a batch in the
classifier's *normalised* input space, with the channel count and image size of the dataset's
:class:`~fedkd.data.specs.DatasetSpec`. The body is the DCGAN-style upsampling net of DAFL/DFAD/CMI:
a linear layer to an ``image_size/4`` feature map of ``2*ngf`` channels, two nearest-neighbour
upsamplings each followed by a 3x3 conv, BatchNorm and LeakyReLU, and a 3x3 conv to the image
channels.

Cost: almost all the work is the two convs at the upsampled resolutions, which grows with
``ngf**2``. ``ngf=64`` (128 channels) is the size used for 32x32 CIFAR images; a 1-channel 28x28
dataset needs far less (``ngf=16`` has about 1/16 of its FLOPs) -- see ``benchmarks/``.

Output heads (``output``):
- ``"bn"`` (DFAD): ``tanh`` then a non-affine BatchNorm, so every batch is standardised per channel
  and lives in normalised input space without knowing the data's mean/std.
- ``"sigmoid"`` (CMI): pixels in [0, 1], then normalised with the spec's mean/std like real data.

:class:`FeatureGenerator` (FedGen) is the odd one out: it generates a classifier's penultimate
features (the head's input), not images.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedkd.data.specs import DatasetSpec
from fedkd.errors import ConfigError, check_choice
from fedkd.models.registry import register_model

OUTPUTS = ("bn", "sigmoid")


class ImageGenerator(nn.Module):
    """Noise ``(N, nz)`` -> images ``(N, C, H, W)`` in normalised input space."""

    conditional = False

    def __init__(
        self,
        spec: DatasetSpec,
        nz: int = 100,
        ngf: int = 64,
        output: str = "bn",
        channels_last: bool = True,
        in_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("generator output", output, OUTPUTS)
        if nz < 1 or ngf < 1:
            raise ConfigError(f"generator nz and ngf must be >= 1 (got nz={nz}, ngf={ngf}); set e.g. nz=100 ngf=16")
        self.nz, self.ngf, self.output = nz, ngf, output
        self.image_size = spec.image_size
        self.init_size = math.ceil(spec.image_size / 4)
        self.fc = nn.Linear(in_dim or nz, 2 * ngf * self.init_size**2)
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, spec.channels, 3, 1, 1),
        )
        # Channels-last feature maps make the CPU (oneDNN) and CUDA (tensor core) convs of the
        # upsampled layers faster (see docs/design_notes.md#channels-last-generator).
        self.channels_last = channels_last
        if channels_last:
            self.body.to(memory_format=torch.channels_last)
        if output == "bn":
            self.out_norm = nn.BatchNorm2d(spec.channels, affine=False)
        else:
            self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(spec.std).view(1, -1, 1, 1))

    def noise(
        self, n: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A batch of latent codes ``z ~ N(0, I)``, shape ``(n, nz)``."""
        return torch.randn(n, self.nz, device=device, generator=generator)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Map the (possibly label-conditioned) latent input of the first layer to images."""
        x = self.fc(h).view(h.shape[0], 2 * self.ngf, self.init_size, self.init_size)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.body(x)
        if x.shape[-1] != self.image_size:  # image sizes that are not a multiple of 4
            x = x[..., : self.image_size, : self.image_size]
        if self.output == "bn":
            return self.out_norm(torch.tanh(x))
        return (torch.sigmoid(x) - self.mean) / self.std

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)


class ConditionalGenerator(ImageGenerator):
    """Noise and label -> image: ``forward(z, y)``.

    The label enters through a learned embedding of size ``nz`` that is multiplied with the noise
    (``embedding="multiply"``, as in FedFTG) or concatenated to it (``"concat"``). Used by the
    label-prior-driven synthesizer that persists across federated rounds.
    """

    conditional = True

    def __init__(
        self,
        spec: DatasetSpec,
        nz: int = 100,
        ngf: int = 64,
        output: str = "bn",
        embedding: str = "multiply",
        channels_last: bool = True,
    ) -> None:
        check_choice("generator embedding", embedding, ("multiply", "concat"))
        in_dim = 2 * nz if embedding == "concat" else nz
        super().__init__(spec, nz=nz, ngf=ngf, output=output, channels_last=channels_last, in_dim=in_dim)
        self.num_classes = spec.num_classes
        self.embedding_mode = embedding
        self.embed = nn.Embedding(spec.num_classes, nz)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        e = self.embed(y)
        h = z * e if self.embedding_mode == "multiply" else torch.cat([z, e], dim=1)
        return self.decode(h)


class NoisyLayerGenerator(ImageGenerator):
    """NAYER's generator (Tran et al., CVPR 2024): label -> fixed embedding -> noisy layer -> image.

    The randomness is not an input noise vector but a *noisy layer*: ``forward(y)`` looks up each
    label's fixed embedding, normalises it (BatchNorm1d), and maps it with one of several linear
    layers that :meth:`reset_noise` re-draws from ``N(0, 1)`` (zero bias) before every synthesis
    round; the rest (:meth:`ImageGenerator.decode`) persists and keeps what all rounds share.

    Samples are laid out in chunks of ``num_classes`` consecutive samples, one noisy layer per chunk
    (the authors' ``nl = num_classes``): with the balanced labels ``arange(n) % num_classes`` every
    chunk holds each class once, so a layer serves every class and different chunks give different
    samples of a class. Samples of one label within one chunk are identical.

    The authors embed the class *names* with a text encoder (CLIP); no such encoder is available
    offline, so the embeddings here are fixed Gaussian vectors, one per class, drawn at construction
    and kept in the state dict (a buffer): replace ``label_embedding`` to bring your own.
    """

    conditional = True

    def __init__(
        self,
        spec: DatasetSpec,
        batch_size: int = 256,
        embed_dim: int = 64,
        nz: int = 100,
        ngf: int = 64,
        output: str = "sigmoid",
        channels_last: bool = True,
    ) -> None:
        if batch_size < 1 or embed_dim < 1:
            raise ConfigError(
                f"generator batch_size and embed_dim must be >= 1 (got {batch_size}, {embed_dim}); "
                "set e.g. embed_dim=64"
            )
        super().__init__(spec, nz=nz, ngf=ngf, output=output, channels_last=channels_last)
        self.num_classes, self.batch_size = spec.num_classes, batch_size
        self.register_buffer("label_embedding", torch.randn(spec.num_classes, embed_dim))
        self.embed_norm = nn.BatchNorm1d(embed_dim)
        layers = math.ceil(batch_size / spec.num_classes)
        self.noise_weight = nn.Parameter(torch.empty(layers, embed_dim, nz))
        self.noise_bias = nn.Parameter(torch.empty(layers, nz))
        self.reset_noise()

    @torch.no_grad()
    def reset_noise(self) -> None:
        """Re-draw the noisy layers (the authors' ``re_init_le``): ``N(0, 1)`` weights, zero bias."""
        self.noise_weight.normal_(0.0, 1.0)
        self.noise_bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c = len(y), self.num_classes
        layers = math.ceil(n / c)
        if layers > len(self.noise_weight):
            raise ConfigError(
                f"the noisy-layer generator was built for {self.batch_size} samples, not {n}; "
                f"set synthesizer.batch_size and the generator's batch_size alike"
            )
        e = self.embed_norm(self.label_embedding[y])
        e = torch.cat([e, e.new_zeros(layers * c - n, e.shape[1])]).view(layers, c, -1)  # one chunk per layer
        h = torch.baddbmm(self.noise_bias[:layers, None, :], e, self.noise_weight[:layers])
        return self.decode(h.reshape(layers * c, -1)[:n])


class FeatureGenerator(nn.Module):
    """FedGen's generator: noise and label -> a feature vector of the classifier head's input size.

    ``[noise, one_hot(y)] -> Linear(hidden) -> BatchNorm1d -> ReLU -> Linear(feature_dim)``, a
    few tens of thousands of parameters for LeNet/small-CNN heads. ``forward(y)`` draws the noise
    itself (from ``generator`` when given: clients sample with their own RNG stream so the data
    order is untouched); ``forward(y, noise=eps)`` uses given noise (the diversity term needs it).
    """

    conditional = True

    def __init__(self, spec: DatasetSpec, feature_dim: int, noise_dim: int = 32, hidden: int = 256) -> None:
        super().__init__()
        if feature_dim < 1 or noise_dim < 1 or hidden < 1:
            raise ConfigError(
                f"feature generator sizes must be >= 1 (got feature_dim={feature_dim}, noise_dim={noise_dim}, "
                f"hidden={hidden}); fix strategy.generator"
            )
        self.num_classes, self.feature_dim, self.noise_dim = spec.num_classes, feature_dim, noise_dim
        self.net = nn.Sequential(
            nn.Linear(noise_dim + spec.num_classes, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, feature_dim),
        )

    def sample_noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        device = next(self.parameters()).device
        return torch.randn(n, self.noise_dim, generator=generator, device=device)

    def forward(
        self, y: torch.Tensor, noise: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if noise is None:
            noise = self.sample_noise(len(y), generator)
        one_hot = torch.nn.functional.one_hot(y, self.num_classes).to(noise.dtype)
        return self.net(torch.cat([noise, one_hot], dim=1))


def reset_parameters(module: nn.Module) -> None:
    """Re-initialise every sub-module that knows how (CMI starts each synthesis round afresh)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()


@register_model("dfad_generator", kind="generator")
def dfad_generator(
    spec: DatasetSpec, nz: int = 100, ngf: int = 64, output: str = "bn", channels_last: bool = True
) -> ImageGenerator:
    """DFAD's generator: ends in tanh + non-affine BatchNorm (normalised samples)."""
    return ImageGenerator(spec, nz=nz, ngf=ngf, output=output, channels_last=channels_last)


@register_model("cmi_generator", kind="generator")
def cmi_generator(
    spec: DatasetSpec, nz: int = 256, ngf: int = 64, output: str = "sigmoid", channels_last: bool = True
) -> ImageGenerator:
    """CMI's generator: sigmoid pixels normalised with the dataset's mean/std."""
    return ImageGenerator(spec, nz=nz, ngf=ngf, output=output, channels_last=channels_last)


@register_model("cond_generator", kind="generator")
def cond_generator(
    spec: DatasetSpec,
    nz: int = 100,
    ngf: int = 64,
    output: str = "bn",
    embedding: str = "multiply",
    channels_last: bool = True,
) -> ConditionalGenerator:
    """Conditional generator (noise + label -> sample), FedFTG/DENSE family."""
    return ConditionalGenerator(spec, nz=nz, ngf=ngf, output=output, embedding=embedding, channels_last=channels_last)


@register_model("nayer_generator", kind="generator")
def nayer_generator(
    spec: DatasetSpec,
    batch_size: int = 256,
    embed_dim: int = 64,
    nz: int = 100,
    ngf: int = 64,
    output: str = "sigmoid",
    channels_last: bool = True,
) -> NoisyLayerGenerator:
    """NAYER's noisy-layer generator (label embedding -> re-drawn linear layer -> image)."""
    return NoisyLayerGenerator(spec, batch_size=batch_size, embed_dim=embed_dim, nz=nz, ngf=ngf, output=output,
                               channels_last=channels_last)


@register_model("fedgen_generator", kind="generator")
def fedgen_generator(spec: DatasetSpec, feature_dim: int, noise_dim: int = 32, hidden: int = 256) -> FeatureGenerator:
    """FedGen's feature-space generator (noise + label -> head input), ``feature_dim`` = the head's input size."""
    return FeatureGenerator(spec, feature_dim=feature_dim, noise_dim=noise_dim, hidden=hidden)
