"""Readers of what images show, fit on real images: the judges of generated ones.

    ImageFactorReader   an MLP regressor on single images, its predictions averaged over a group:
                        the factors a group shares (data/grouped.py), from its images
    ClassReader         an MLP classifier on single images: the class of each image

Both are scikit-learn MLPs on flattened pixels in [0, 1]; group factors reads transferred images
with the first, set generation reads generated sets with both.
"""

from __future__ import annotations

import torch

from ..data import to_unit_float

# sklearn's early stopping holds out 10% of the images; fewer than this leave too few to judge by.
EARLY_STOPPING_MIN_IMAGES = 200


class ImageFactorReader:
    """Factors of a group from its images: an MLP on single images, averaged over the group."""

    def __init__(self, images: torch.Tensor, factors: torch.Tensor, seed: int):
        from sklearn.neural_network import MLPRegressor
        from sklearn.preprocessing import StandardScaler

        # images (G, B, C, H, W) in [0, 1], on any device (the MLP runs on the CPU), factors (G, F)
        self.scaler = StandardScaler().fit(factors.cpu().numpy())
        targets = self.scaler.transform(factors.cpu().repeat_interleave(images.shape[1], 0).numpy())
        x = images.flatten(2).flatten(0, 1).cpu().numpy()
        early = len(x) >= EARLY_STOPPING_MIN_IMAGES
        self.net = MLPRegressor(hidden_layer_sizes=(128,), max_iter=300, early_stopping=early, random_state=seed)
        self.net.fit(x, targets)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        per_image = self.net.predict(images.flatten(2).flatten(0, 1).cpu().numpy())
        per_group = per_image.reshape(images.shape[0], images.shape[1], -1).mean(1)
        return torch.from_numpy(self.scaler.inverse_transform(per_group)).float()


def r2_per_factor(truth: torch.Tensor, predicted: torch.Tensor) -> list[float]:
    from sklearn.metrics import r2_score

    return [float(r2_score(truth[:, f].numpy(), predicted[:, f].numpy())) for f in range(truth.shape[1])]


def flat(images: torch.Tensor) -> torch.Tensor:
    """(S, N, C, H, W) uint8 or float images -> (S, N, D) float pixels in [0, 1]."""
    images = to_unit_float(images) if images.dtype == torch.uint8 else images.float()
    return images.flatten(2).cpu()


class ClassReader:
    """A classifier of single images (an MLP on pixels) fit on real labelled images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, seed: int):
        from sklearn.neural_network import MLPClassifier

        x = flat(images[None])[0].numpy()
        early = len(x) >= EARLY_STOPPING_MIN_IMAGES
        self.net = MLPClassifier(hidden_layer_sizes=(256,), max_iter=200, early_stopping=early, random_state=seed)
        self.net.fit(x, labels.numpy())

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Class id of each image of (S, N, C, H, W) -> (S, N) long."""
        x = flat(images)
        return torch.from_numpy(self.net.predict(x.flatten(0, 1).numpy())).long().view(x.shape[:2])

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Share of (N, C, H, W) images classified as their label."""
        return float((self(images[None])[0] == labels).float().mean())
