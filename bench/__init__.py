"""Step benchmarks: Pyro's training step against a hand-written PyTorch loss of the same networks."""
