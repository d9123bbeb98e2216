"""Bounded resources: a run (or a prediction) whose memory cannot fit is refused before any work,
with the estimate, instead of being killed by the kernel part-way.

The estimate adds the terms that grow with the settings: the data sets; the weights of both
networks with their gradients, optimizer moments and the copies training keeps (best weights, the
epoch snapshot a rollback returns to, the checkpoint being written); the activations of one
training minibatch; and the largest evaluation step: the mixtures of a whole evaluation set, the
modes (a (N, K, K, D, D) float64 system), the closed-form CRPS (N, K, K) and the Monte Carlo
highest-density levels (chunked at about 20 million draws). It is a lower bound of the peak, not a
measurement: what it refuses cannot run, and what it accepts still needs the usual headroom.
"""

from __future__ import annotations

import math

from mdn_experiments.memory import GIB, Estimate, ResourceError, available_memory, gib  # noqa: F401 (this module's API)

FLOAT32, FLOAT64 = 4, 8
# bytes per weight: the weight, its gradient, two Adam moments, the best weights, the epoch
# snapshot (weights and moments) and the state being serialised
BYTES_PER_PARAMETER = 10 * FLOAT32
HDR_CHUNK = 20_000_000  # evaluation.hdr_levels draws this many values at a time (at least one input's)
HDR_SAMPLES = 1000


def mixture_values(K: int, D: int) -> int:
    """Numbers held per input by a mixture (pi, mu, and the widest scale form: a D x D factor)."""
    return K * (1 + D + D * D)


def evaluation_bytes(n: int, K: int, D: int, one_dimensional_scores: bool = True) -> dict[str, int]:
    """The evaluation steps over n inputs at once, each on its own (they do not overlap)."""
    steps = {
        "the mixtures of an evaluation set": 3 * n * mixture_values(K, D) * FLOAT32,
        "the modes of the test mixtures": 4 * n * K * K * D * D * FLOAT64 + 3 * n * K * K * FLOAT64,
        "the highest-density levels": 4 * max(HDR_CHUNK, HDR_SAMPLES * K * D) * FLOAT64,
    }
    if one_dimensional_scores and D == 1:
        steps["the closed-form CRPS"] = 4 * n * K * K * FLOAT64
    return steps


def run_estimate(
    *,
    n_data: int,
    input_size: int,
    out_dim: int,
    K: int,
    n_eval: int,
    parameters: int,
    activations_per_input: int,
    batch: int,
) -> Estimate:
    """The memory a run needs at its peak (see the module's docstring)."""
    steps = evaluation_bytes(n_eval, K, out_dim)
    name, size = max(steps.items(), key=lambda item: item[1])
    return Estimate(
        {
            "the data": 2 * n_data * (input_size + out_dim) * FLOAT32,
            "the weights and their training copies": parameters * BYTES_PER_PARAMETER,
            "one training minibatch": 3 * batch * activations_per_input * FLOAT32,
            name: size,
        }
    )


def sample_estimate(n_inputs: int, n_samples: int, K: int, D: int) -> Estimate:
    """mdn-predict's samples, float64 (serve.mixture.sample): the (S, N, D) draws, the component
    picks, the noise and each draw's chosen mean and spread (a Cholesky factor at most)."""
    return Estimate(
        {
            "the samples": n_samples * n_inputs * (4 * D + D * D + 2) * FLOAT64,
            **{name: size for name, size in evaluation_bytes(n_inputs, K, D, False).items() if "modes" in name},
        }
    )


def activation_count(network, input_shape: tuple[int, ...]) -> int:
    """Numbers every layer of `network` produces for one input, from a forward pass on the meta
    device (nothing is allocated): what one input costs in activations."""
    import torch

    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += math.prod(output.shape[1:])

    hooks = [m.register_forward_hook(count) for m in network.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            network(torch.empty(1, *input_shape, device="meta"))
    except Exception:  # noqa: BLE001 - a layer without meta support: count the parameters instead
        total = sum(p.numel() for p in network.parameters())
    finally:
        for hook in hooks:
            hook.remove()
    return total + math.prod(input_shape)
