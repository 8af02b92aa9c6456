"""Benchmarks: Pyro's training step against a hand-written PyTorch loss of the same networks
(train_step.py), a whole training run by phase (run.py), and checkpoint input/output
(checkpoint_io.py).

They use the installed package as any client would (`ugvae.model`, `ugvae.train`, `ugvae.run`,
...): `python -m ugvae.bench.train_step`, or `python -m bench.train_step` from a checkout whose
package is installed (`pip install -e .`; on a machine without network, `pip install --no-deps
--no-build-isolation -e .`).
"""

import importlib.util

if __name__ == "bench" and importlib.util.find_spec("ugvae") is None:
    raise SystemExit("the benchmarks use the installed package ugvae: run `pip install -e .` in the checkout first")
