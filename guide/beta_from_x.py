"""Ablation of UG-VAE's guide: the global encoder does not see the cluster probabilities.

    q(Z, d, beta | X) = q(Z | X) q(d | Z) q(beta | X)
    q(beta | X)       = prod_i N(mu_i, Sigma_i), (mu_i, Sigma_i) = f(x_i)      eq. 9 without pi

Eq. 8 feeds pi(z_i) to each factor of q(beta | .): this is what, in the paper's words, lets
the beta encoder know "which component each observation belongs to". Dropping it leaves
ML-VAE's accumulated-evidence encoder in front of UG-VAE's model, and isolates that claim.
"""

from .ugvae import UGVAEGuide


class BetaFromXGuide(UGVAEGuide):
    """Ablation ``beta-from-x``: q(beta | X) reads the images only, not pi(z) (eq. 9 without pi)."""

    global_reads_pi = False
