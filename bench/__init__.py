"""Step benchmarks: Pyro's training step against a hand-written PyTorch loss of the same networks.

They use the package as any client would (`ugvae.model`, `ugvae.train`, ...). Run from a
checkout as `python -m bench.train_step`, this folder is imported as `bench` and the checkout
becomes `ugvae` first; installed, it is `python -m ugvae.bench.train_step`.
"""

if __name__ == "bench":
    from _checkout import use_checkout

    use_checkout()
