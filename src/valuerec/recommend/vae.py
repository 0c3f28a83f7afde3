"""Mult-VAE: a variational autoencoder over each user's item set (Liang et al., WWW 2018,
"Variational Autoencoders for Collaborative Filtering").

The user's (L2-normalised, dropped-out) interaction row is encoded to a Gaussian latent, and
decoded to a softmax over all items trained with the multinomial log-likelihood; the KL term
is annealed from 0 to ``beta`` as in the paper. Scores for a user are the decoder logits of
the encoded mean, computed from their history, so new interactions need no retraining.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from valuerec.nn.early_stopping import EarlyStopping
from valuerec.recommend.base import Recommender


class _VAE(nn.Module):
    def __init__(self, n_items: int, hidden: int, latent: int, dropout: float) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_items, hidden), nn.Tanh())
        self.to_stats = nn.Linear(hidden, 2 * latent)
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, n_items)
        )
        self.drop = nn.Dropout(dropout)
        self.latent = latent

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(self.drop(F.normalize(x, dim=1)))
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return self.decoder(z), mu, logvar


class MultVAERecommender(Recommender):
    """Mult-VAE with KL annealing (hidden 600, latent 200 as in the paper)."""

    name = "multvae"

    def __init__(
        self,
        hidden: int = 600,
        latent: int = 200,
        dropout: float = 0.5,
        beta: float = 0.2,
        anneal_steps: int = 2000,
        epochs: int = 50,
        batch_size: int = 128,
        lr: float = 1e-3,
        seed: int = 0,
        eval_every: int = 2,
        patience: int = 5,
    ) -> None:
        self.hidden = hidden
        self.latent = latent
        self.dropout = dropout
        self.beta = beta
        self.anneal_steps = anneal_steps
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.eval_every = eval_every
        self.patience = patience

    def fit(
        self, interactions: Any, validation: Callable[[MultVAERecommender], float] | None = None
    ) -> MultVAERecommender:
        """Train for ``epochs``; with ``validation`` (model -> score, higher is better) the
        score is checked every ``eval_every`` epochs, the best weights kept, and training
        stops after ``patience`` checks without improvement (``epochs`` is then a ceiling)."""
        self._validation = validation
        try:
            super().fit(interactions)
        finally:
            self._validation = None
        return self

    def fit_split(self, split: Any) -> MultVAERecommender:
        """Fit on ``split.train`` with early stopping on validation NDCG@10 (as RecBole does:
        the autoencoder overfits the training rows long before a fixed epoch budget ends)."""
        return self.fit(split.train, validation=self._valid_ndcg(split))

    def _fit(self, matrix: sp.csr_matrix) -> None:
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        # rows densified per batch: the whole users x items matrix dense would be 8 GB at
        # 100k users x 20k items, where a batch of 256 rows is 20 MB
        x_all = matrix.tocsr().astype(np.float32)
        self.net_ = _VAE(matrix.shape[1], self.hidden, self.latent, self.dropout)
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr)
        step = 0
        stopper = EarlyStopping(self.patience)
        self.epochs_run_ = 0
        for epoch in range(1, self.epochs + 1):
            self.net_.train()
            perm = rng.permutation(x_all.shape[0])
            for start in range(0, x_all.shape[0], self.batch_size):
                x = torch.as_tensor(x_all[perm[start : start + self.batch_size]].toarray())
                logits, mu, logvar = self.net_(x)
                nll = -(F.log_softmax(logits, dim=1) * x).sum(dim=1).mean()
                kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
                anneal = min(self.beta, self.beta * step / max(self.anneal_steps, 1))
                loss = nll + anneal * kl
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
            self.epochs_run_ = epoch
            if self._validation is not None and epoch % self.eval_every == 0:
                self.net_.eval()
                if stopper.check(float(self._validation(self)), self.net_, epoch):
                    break
        stopper.restore(self.net_)
        self.best_epoch_ = stopper.best_epoch or self.epochs_run_
        self.net_.eval()

    def _score_rows(self, rows: sp.csr_matrix) -> np.ndarray:
        x = torch.as_tensor(rows.toarray(), dtype=torch.float32)
        with torch.no_grad():
            logits, _, _ = self.net_(x)
        return logits.numpy()

    def _item_similarity(self, j: int) -> np.ndarray:
        w = self.net_.decoder[-1].weight.detach().numpy()  # item output embeddings
        norms = np.linalg.norm(w, axis=1) + 1e-12
        return (w @ w[j]) / (norms * norms[j])
