"""`make init-study`: does data-driven initialisation or reviving dead components help?

Trains the MDN (no baseline, no figures) for every combination of
    (inverse_sine, K = 3, 5, 10) and (robot_arm, K = 3)  x  seeds 0, 1, 2
    x  model.init = default, quantiles, gmm  x  trainer.revive_dead = false, true
with each dataset's tuned settings, and records the final quality (toy: test NLL; arm: test
positioning RMSE of the most probable component), the final component health on the validation
set, and the first epoch and training time at which the validation quality reaches a target
(toy: val NLL <= -1.10; arm: val positioning RMSE <= 0.0053, Bishop's MDN). Two jobs run at once,
one thread each. Writes outputs/init_study/init_study.json and init_study.md and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from mdn_experiments import files

CASES = [("inverse_sine", 3), ("inverse_sine", 5), ("inverse_sine", 10), ("robot_arm", 3)]
INITS = ("default", "quantiles", "gmm")
TARGETS = {"inverse_sine": ("val NLL", -1.10), "robot_arm": ("val positioning RMSE", 0.0053)}


def run_one(job: tuple[str, int, int, str, bool, list[str]]) -> dict:
    dataset_name, K, seed, init, revive, extra = job
    import torch

    from mdn_experiments.config.compose import compose
    from mdn_experiments.evaluation.health import HEALTH_KEYS
    from mdn_experiments.run.build import build_run
    from mdn_experiments.run.runner import make_trainer
    from mdn_experiments.train.trainer import evaluate_loss, predict

    torch.set_num_threads(1)
    overrides = [
        f"dataset={dataset_name}",
        f"K={K}",
        f"seed={seed}",
        f"model.init={init}",
        f"trainer.revive_dead={str(revive).lower()}",
        "trainer.progress=false",
        "trainer.threads=1",
        *extra,
    ]
    objects = build_run(compose(overrides))
    dataset = objects.dataset
    torch.manual_seed(seed)
    splits = dataset.load(seed).to(objects.device)
    net = objects.prepared("mdn", splits)
    quality_name, target = TARGETS[dataset_name]
    reached: dict = {}

    def quality(network, x, y) -> float:
        if dataset_name == "robot_arm":
            return float(dataset.positioning_errors(x, predict(network, x).most_probable_mean()).square().mean().sqrt())
        return evaluate_loss(network, x, y)[0]

    def watch(trainer, row) -> None:  # runs first, on the weights the row was computed from
        value = row["val_nll"] if dataset_name == "inverse_sine" else quality(trainer.network, *splits.val)
        if not reached and value <= target:
            reached.update(epoch=row["epoch"], seconds=row["seconds"])

    trainer = make_trainer(objects, net, splits, progress=False, desc="mdn")
    trainer.epoch_hooks.insert(0, watch)
    start = time.perf_counter()
    result = trainer.run()
    _, health = evaluate_loss(net, *splits.val)
    return {
        "dataset": dataset_name,
        "K": K,
        "seed": seed,
        "init": init,
        "revive": revive,
        "final": quality(net, *splits.test),
        "quality": quality_name.replace("val", "test"),
        **{k: health[k] for k in HEALTH_KEYS},
        "revivals": len(result.revivals),
        "epochs_run": len(result.history),
        "seconds": time.perf_counter() - start,
        "target_epoch": reached.get("epoch"),
        "target_seconds": reached.get("seconds"),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | K | init | revive | final (mean ± std) | effective | dead | revivals | reached target "
        "| epoch to target (median) | training s to target (median) | training s (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = itertools.groupby(rows, key=lambda r: (r["dataset"], r["K"], r["init"], r["revive"]))
    for (dataset, K, init, revive), group in groups:
        g = list(group)
        final = [r["final"] for r in g]
        hit = [r for r in g if r["target_epoch"] is not None]
        mean = lambda key: statistics.mean(r[key] for r in g)  # noqa: E731
        epoch_to = statistics.median(r["target_epoch"] for r in hit) if hit else "—"
        seconds_to = f"{statistics.median(r['target_seconds'] for r in hit):.1f}" if hit else "—"
        fmt = "{:.4f}" if dataset == "robot_arm" else "{:.3f}"
        lines.append(
            f"| {dataset} | {K} | {init} | {'yes' if revive else 'no'} | {fmt.format(statistics.mean(final))} ± "
            f"{fmt.format(statistics.stdev(final) if len(final) > 1 else 0)} | {mean('effective_components'):.2f} "
            f"| {mean('dead_components'):.1f} | {mean('revivals'):.1f} | {len(hit)}/{len(g)} "
            f"| {epoch_to} | {seconds_to} "
            f"| {mean('seconds'):.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="init-study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/init_study"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="jobs at once (one thread each)")
    parser.add_argument("--quick", action="store_true", help="2 epochs, small data: a smoke test of the study")
    args = parser.parse_args(argv)
    extra = ["trainer.epochs=2", "dataset.n_train=200", "dataset.n_val=100", "dataset.n_test=200"] if args.quick else []
    jobs = [
        (d, K, s, init, revive, extra)
        for (d, K) in CASES
        for init in INITS
        for revive in (False, True)
        for s in range(args.seeds)
    ]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run_one, jobs))
    args.out.mkdir(parents=True, exist_ok=True)
    files.write_text(args.out / "init_study.json", json.dumps(rows, indent=1) + "\n")
    text = table(rows)
    targets = "; ".join(f"{d}: {name} <= {t}" for d, (name, t) in TARGETS.items())
    files.write_text(
        args.out / "init_study.md",
        f"# Initialisation and revival study\n\nTargets: {targets}. Seeds 0..{args.seeds - 1}; "
        f"{len(rows)} runs in {(time.perf_counter() - start) / 60:.1f} min.\n\n{text}\n",
    )
    print(text)
    print(f"\n[init-study] {len(rows)} runs in {(time.perf_counter() - start) / 60:.1f} min: {args.out}/init_study.md")


if __name__ == "__main__":
    main()
