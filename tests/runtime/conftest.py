"""Runtime tests run torch with one thread (as their subprocesses do)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread, as in the subprocesses, so that in-process and subprocess losses agree bit for bit."""
    try:
        import torch
    except ImportError:
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
