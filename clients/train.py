"""Local training of one client: epochs of :func:`fedkd.training.train_epoch` plus optional terms.

The terms are regularizers added to the cross-entropy of every local batch (never a second copy
of the loop): FedProx's :func:`proximal_term` and FedGen's :class:`GeneratorRegularizer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fedkd.data import Split
from fedkd.errors import ConfigError
from fedkd.training import train_epoch
from fedkd.training.supervised import Regularizer


def proximal_term(model: nn.Module, mu: float) -> Regularizer:
    """FedProx's ``(mu/2) * ||w - w_global||^2``, with ``w_global`` the weights ``model`` has now.

    Call it right after loading the global model, before the first local step.
    """
    anchor = [p.detach().clone() for p in model.parameters()]

    def term(current: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        squares = [(p - a).pow(2).sum() for p, a in zip(current.parameters(), anchor, strict=True)]
        return 0.5 * mu * torch.stack(squares).sum()

    return term


class GeneratorRegularizer:
    """FedGen's client term (Zhu et al., ICML 2021, eq. 5), added to each local batch's cross-entropy::

        weight * CE(head(G(eps, y_hat)), y_hat),   y_hat ~ label_prior,  eps ~ N(0, I)

    ``head`` is the client model's classifier head (its last linear layer), ``G`` the server's
    feature generator, frozen (eval mode, no gradient): the term only moves the head, pulling it
    towards the decision boundaries the generator distilled from all clients' heads. ``batch_size``
    generated features per step (``None``: as many as the real batch).

    ``kl_weight > 0`` adds the term of the authors' public code that the paper does not have:
    ``kl_weight * KL(softmax(head(G(eps, y))) || softmax(model(x)))`` on the real batch's labels
    ``y``, the generated side detached. Off by default.

    Noise and labels come from this object's own RNG stream, so the real batches' order is the
    same as without the term (with ``weight = kl_weight = 0`` local training is bit-for-bit plain
    training). ``mean_loss`` is the term's mean over the steps so far (reported to the server).
    """

    def __init__(
        self,
        generator: nn.Module,
        label_prior: Sequence[float] | torch.Tensor,
        weight: float,
        seed: int,
        batch_size: int | None = None,
        kl_weight: float = 0.0,
    ) -> None:
        prior = torch.as_tensor(label_prior, dtype=torch.float64)
        if prior.dim() != 1 or (prior < 0).any() or prior.sum() <= 0:
            raise ConfigError(
                "the generator's label prior must be non-negative with a positive sum; check the server's label counts"
            )
        if weight < 0 or kl_weight < 0:
            raise ConfigError(
                f"generator weights must be >= 0 (got {weight}, {kl_weight}); "
                "fix strategy.regularizer_weight / kl_weight"
            )
        self.generator = generator.eval().requires_grad_(False)
        self.prior = prior / prior.sum()
        self.weight, self.kl_weight, self.batch_size = float(weight), float(kl_weight), batch_size
        self.rng = torch.Generator().manual_seed(seed)  # CPU stream, independent of the data order
        self._total: torch.Tensor | float = 0.0
        self._steps = 0

    def _generate(self, labels: torch.Tensor, device: torch.device) -> torch.Tensor:
        noise = torch.randn(len(labels), self.generator.noise_dim, generator=self.rng)
        with torch.no_grad():
            return self.generator(labels.to(device), noise=noise.to(device))

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None
    ) -> torch.Tensor:
        head = getattr(model, "head", None)
        if not isinstance(head, nn.Linear):
            raise ConfigError(f"FedGen needs a registry classifier with a linear head; {type(model).__name__} has none")
        labels = torch.multinomial(self.prior, self.batch_size or len(y), replacement=True, generator=self.rng)
        features = self._generate(labels, y.device)
        term = self.weight * F.cross_entropy(head(features).float(), labels.to(y.device))
        if self.kl_weight > 0 and logits is not None:
            target = F.softmax(head(self._generate(y.cpu(), y.device)).float(), dim=1).detach()
            term = term + self.kl_weight * F.kl_div(F.log_softmax(logits.float(), dim=1), target, reduction="batchmean")
        self._total = self._total + term.detach()  # summed on the device: no host sync per batch
        self._steps += 1
        return term

    @property
    def mean_loss(self) -> float:
        return float(self._total) / max(self._steps, 1)


def combine(terms: Sequence[Regularizer]) -> Regularizer | None:
    """One regularizer summing ``terms`` (``None`` when there are none)."""
    if not terms:
        return None
    if len(terms) == 1:
        return terms[0]

    def total(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
        return sum(t(model, x, y, logits) for t in terms)

    return total


def local_train(
    model: nn.Module,
    split: Split,
    make_optimizer: Callable[..., torch.optim.Optimizer],
    lr: float,
    epochs: int,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator,
    proximal_mu: float = 0.0,
    regularizer: Regularizer | None = None,
) -> dict[str, float]:
    """Train ``model`` on ``split`` for ``epochs``; returns the last epoch's ``loss`` and ``accuracy``.

    ``make_optimizer(params, lr=...)`` is the configured optimizer (a fresh one each round, as
    in FedAvg: no optimizer state crosses rounds). ``proximal_mu > 0`` adds FedProx's term;
    ``regularizer`` any other term (FedGen's :class:`GeneratorRegularizer`).
    """
    model.to(device).train()
    optimizer = make_optimizer(model.parameters(), lr=lr)
    terms = [proximal_term(model, proximal_mu)] if proximal_mu > 0 else []
    if regularizer is not None:
        terms.append(regularizer)
    metrics: dict[str, float] = {"loss": float("nan"), "accuracy": float("nan")}
    for _ in range(epochs):
        metrics = train_epoch(
            model, split, optimizer, batch_size, device, generator=generator, regularizer=combine(terms)
        )
    return metrics
