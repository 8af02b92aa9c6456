import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one thread, and a subprocess limited to one sums in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
