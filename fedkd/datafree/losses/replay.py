"""Pseudo replay's VAE objective (PRE-DFKD): reconstruction, the teacher's agreement on it, and the latent KL."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def vae_reconstruction(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PRE-DFKD's reconstruction term in input space: mean absolute error (L1, as the authors'
    code; robust to the heavy-tailed pixels of standardised synthetic images)."""
    return F.l1_loss(reconstruction.float(), target.float())


def teacher_agreement(reconstruction_logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """PRE-DFKD's synthetic-data term: L1 between the teacher's logits on a reconstruction and on
    the sample it reconstructs, so the VAE keeps what the teacher responds to, not only pixels."""
    return F.l1_loss(reconstruction_logits.float(), target_logits.float())


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the latent dimensions, averaged over the batch."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
