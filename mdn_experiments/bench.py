"""`make bench`: speed, reported as ratios side by side (never asserted by tests).

1. The MDN negative log-likelihood, forward + backward: this package's log-space formula against
   torch.distributions.MixtureSameFamily on the same parameters.
2. One training step of the toy MDN (64x64 tanh MLP, batch 128) with 1 and 2 torch threads.
"""

from __future__ import annotations

import argparse
import time

import torch

from mdn_experiments import mdn
from mdn_experiments.models import MLP, build_network


def _time(fn, repeats: int) -> float:
    """Median seconds per call over `repeats` calls, after a warm-up."""
    for _ in range(max(3, repeats // 10)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return sorted(samples)[len(samples) // 2]


def bench_nll(n: int, K: int, D: int, repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(n, K * (1 + 2 * D), generator=g).requires_grad_(True)
    y = torch.randn(n, D, generator=g)

    def ours():
        raw.grad = None
        mdn.nll(mdn.mixture_from_raw(raw, K, D), y).backward()

    def reference():
        raw.grad = None
        (-mdn.mixture_from_raw(raw, K, D).to_distribution().log_prob(y).mean()).backward()

    return _time(ours, repeats), _time(reference, repeats)


def bench_train_step(threads: int, repeats: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_network(MLP([1], [64, 64]), [1], 1, "mdn", n_components=3)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, y = torch.randn(128, 1), torch.randn(128, 1)

    def step():
        loss, _ = net.loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()

    return _time(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    threads = torch.get_num_threads()

    print(f"torch {torch.__version__}, {threads} threads, CPU\n")
    print("MDN NLL, forward + backward (median ms per call)")
    print(f"{'N':>6} {'K':>3} {'D':>2} | {'mdn.nll':>9} {'torch.distributions':>20} | ratio")
    for n, K, D in [(1000, 3, 1), (1000, 3, 2), (4096, 10, 1), (4096, 10, 2), (16384, 5, 3)]:
        ours, reference = bench_nll(n, K, D, args.repeats)
        print(f"{n:>6} {K:>3} {D:>2} | {ours * 1e3:>9.3f} {reference * 1e3:>20.3f} | {reference / ours:4.2f}x")

    print("\nToy MDN training step, 64x64 tanh MLP, batch 128 (median ms per step)")
    one = bench_train_step(1, args.repeats)
    two = bench_train_step(min(2, max(threads, 1)), args.repeats)
    print(f"1 thread: {one * 1e3:.3f}   2 threads: {two * 1e3:.3f}   ratio 2/1: {two / one:.2f}")


if __name__ == "__main__":
    main()
