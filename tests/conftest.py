import os

import numpy as np
import pytest
import torch

# Without a GPU, the fused decoder's Triton kernels (tests/test_fused_decoder.py) run in Triton's CPU
# interpreter, which is chosen when triton is first imported: so here, before any test imports it.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def two_block_data(n=500, G=40, seed=0, noise=0.5):
    """Two studies: shared factors on features 0-9 and 10-19, study s0's own on 20-29, s1's on 30-39."""
    rng = np.random.default_rng(seed)
    Ws = np.zeros((G, 2))
    Ws[0:10, 0] = 3
    Ws[10:20, 1] = 3
    Wm = {"s0": np.zeros((G, 1)), "s1": np.zeros((G, 1))}
    Wm["s0"][20:30, 0] = 3
    Wm["s1"][30:40, 0] = 3
    X, study = [], []
    for lab, W in Wm.items():
        z = rng.normal(size=(n, 2))
        zeta = rng.normal(size=(n, 1))
        X.append(z @ Ws.T + zeta @ W.T + rng.normal(scale=noise, size=(n, G)))
        study += [lab] * n
    return np.vstack(X).astype(np.float32), np.array(study), Ws, Wm


@pytest.fixture(scope="session")
def blocks():
    return two_block_data()


@pytest.fixture(scope="session")
def fitted_blocks(blocks):
    from mssvae import MSSVAE

    X, study, _, _ = blocks
    # Default prior weight ("auto").  With random_state=0 this toy shows a known failure mode
    # instead (s1's own factor absorbed into an extra shared column); seeds 1 and 2 recover it.
    # lr=0.01 (Table 2) rather than the default 0.003: this short fit (600 steps) needs the faster rate.
    # On the CPU, as in CI: tests of this fit check exact repeats, and a GPU's arithmetic (fp32 too) lands on
    # another fit of this seed-fragile toy (the GPU path: test_cuda_graphs.py, benchmarks/probes/cuda_blocks.py).
    model = MSSVAE(n_shared=5, n_specific=2, max_epochs=150, batch_size=256, random_state=1, lr=0.01, device="cpu")
    return model.fit(X, study)


@pytest.fixture(scope="session")
def small_counts():
    rng = np.random.default_rng(1)
    n, G = 60, 20
    study = np.repeat(["a", "b", "c"], n // 3)
    mu = np.exp(rng.normal(3, 1, size=G))
    X = rng.poisson(mu, size=(n, G)).astype(np.float32)
    return X, study


@pytest.fixture
def one_thread():
    """Torch's intra-op threads fight over a busy 2-core machine (10x slower for tiny models)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(*args):
    """Invoke the `mssvae` command line in-process."""
    from click.testing import CliRunner

    from mssvae.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(result, *fragments):
    """Non-zero exit, a single `Error:` line naming the problem, no traceback."""
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, result.output
    for f in fragments:
        assert f in errors[0], errors[0]
