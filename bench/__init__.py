"""Benchmarks: Pyro's training step against a hand-written PyTorch loss of the same networks
(train_step.py), and a whole training run by phase (run.py).

They use the package as any client would (`ugvae.model`, `ugvae.train`, `ugvae.run`, ...). Run
from a checkout as `python -m bench.train_step` or `python -m bench.run`, this folder is imported
as `bench` and the checkout becomes `ugvae` first; installed, they are `python -m
ugvae.bench.train_step` and `python -m ugvae.bench.run`.
"""

if __name__ == "bench":
    from _checkout import use_checkout

    use_checkout()
