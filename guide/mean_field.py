"""Ablation of UG-VAE's guide: every encoder reads the images only.

    q(Z, d, beta | X) = prod_i q(z_i | x_i) q(d_i | x_i)  q(beta | X)
    q(d_i | x_i)      = Cat(pi(x_i))                       instead of eq. 7's pi(z_i)
    q(beta | X)       = prod_i N(mu_i, Sigma_i), (mu_i, Sigma_i) = f(x_i)      eq. 9 without pi

z, d and beta are conditionally independent given X, the usual mean-field family with
amortised encoders; d is still enumerated exactly. It measures what the structured
dependencies of eq. 5 (d on z, beta on pi(z)) add.
"""

from .ugvae import UGVAEGuide


class MeanFieldGuide(UGVAEGuide):
    """Ablation ``mean-field``: q(d | x) and q(beta | X) read the images only, so z, d and beta are
    independent given X; d is still enumerated exactly."""

    cluster_reads_z = False
    global_reads_pi = False
