"""`mdn-predict RUN_DIR`: ask a trained MDN about new inputs.

For every input it prints the predicted mixture's components (pi, mu, sigma), its modes with
their probability mass, and optionally samples; `--out FILE.json|FILE.csv` writes the same.

Inputs, one source per call:
  --x 0.45 --x 0.6            one input per --x (comma-separated for several input dimensions)
  --file inputs.csv|.npy      one row per input (.npy: (N, *input_shape) or (N, n_features))
  --index 0 --index 17        test-set examples of the run's dataset (e.g. MNIST images)
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

PROG = "mdn-predict"


class PredictError(Exception):
    """Bad input to mdn-predict: reported as one line."""


def describe(mixture, n_samples: int = 0, temperature_pi: float = 1.0, temperature_sigma: float = 1.0,
             seed: int = 0) -> list[dict[str, Any]]:
    """The whole answer of a batch of mixtures (batch shape (N,)) as plain data, one dict per input:
    components (pi, mu, sigma = marginal standard deviations, covariance), modes (location, mass,
    log_density; highest first) and, if n_samples > 0, samples of the tempered mixture."""
    import torch

    modes = mixture.modes()
    covariance = mixture.component_covariance()
    std = mixture.component_std()
    samples = None
    if n_samples > 0:
        generator = torch.Generator(device=mixture.mu.device).manual_seed(seed)
        samples = mixture.sample(n_samples, generator, temperature_pi, temperature_sigma)  # (S, N, D)
    out = []
    for i in range(mixture.batch_shape[0]):
        record: dict[str, Any] = {
            "components": [{"pi": float(mixture.pi[i, k]), "mu": mixture.mu[i, k].tolist(),
                            "sigma": std[i, k].tolist(), "covariance": covariance[i, k].tolist()}
                           for k in range(mixture.n_components)],
            "modes": [{"location": modes.location[i, j].tolist(), "mass": float(modes.mass[i, j]),
                       "log_density": float(modes.log_density[i, j])}
                      for j in range(mixture.n_components) if modes.valid[i, j]],
        }
        if samples is not None:
            record["samples"] = samples[:, i].tolist()
        out.append(record)
    return out


def _parse_x(values: list[str], n_features: int) -> np.ndarray:
    rows = []
    for text in values:
        try:
            row = [float(v) for v in text.split(",")]
        except ValueError:
            raise PredictError(f"--x {text!r} is not a number or comma-separated numbers") from None
        if len(row) != n_features:
            raise PredictError(f"--x {text!r} has {len(row)} value(s); this model takes {n_features} "
                               f"input value(s) per example" + (", e.g. --x 0.5,0.6" if n_features == 2 else ""))
        rows.append(row)
    return np.asarray(rows, dtype=np.float32)


def _read_file(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    if not path.is_file():
        raise PredictError(f"--file {path}: no such file")
    n_features = int(np.prod(input_shape))
    try:
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            try:
                data = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError:  # a header line
                data = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64, skiprows=1)
        else:
            raise PredictError(f"--file {path}: unknown format {path.suffix!r}; allowed: .csv, .npy")
    except (ValueError, OSError) as err:
        raise PredictError(f"--file {path} cannot be read as numbers: {err}") from None
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1 and n_features == 1:
        data = data[:, None]
    if data.ndim < 1 or data.shape[0] == 0 or int(np.prod(data.shape[1:])) != n_features:
        raise PredictError(f"--file {path} holds an array of shape {data.shape}; this model takes "
                           f"(N, {', '.join(map(str, input_shape))}) or (N, {n_features})")
    if not np.isfinite(data).all():
        raise PredictError(f"--file {path} holds non-finite values (nan or inf)")
    return data.reshape(data.shape[0], *input_shape)


def _write(path: Path, header: dict[str, Any], inputs: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    rows = [{**inp, **rec} for inp, rec in zip(inputs, records)]
    if path.suffix == ".json":
        path.write_text(json.dumps({**header, "predictions": rows}, indent=1) + "\n")
        return
    # .csv: one row per component, mode and sample ("long" format)
    D = len(records[0]["components"][0]["mu"])
    names = ["input", "source", "kind", "rank", "weight", "log_density"] + [f"y{d + 1}" for d in range(D)] \
        + [f"sigma{d + 1}" for d in range(D)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for i, (inp, rec) in enumerate(zip(inputs, records)):
            source = inp.get("index", inp.get("x"))
            source = ";".join(map(str, source)) if isinstance(source, list) else source
            for k, c in enumerate(rec["components"]):
                writer.writerow([i, source, "component", k + 1, c["pi"], "", *c["mu"], *c["sigma"]])
            for j, m in enumerate(rec["modes"]):
                writer.writerow([i, source, "mode", j + 1, m["mass"], m["log_density"], *m["location"]] + [""] * D)
            for j, s in enumerate(rec.get("samples", [])):
                writer.writerow([i, source, "sample", j + 1, "", "", *s] + [""] * D)


def _vector(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]" if len(values) > 1 else f"{values[0]:.4g}"


def _print(inputs: list[dict[str, Any]], records: list[dict[str, Any]], min_mass: float, max_samples: int = 5) -> None:
    for i, (inp, rec) in enumerate(zip(inputs, records)):
        if "index" in inp:
            what = f"test example #{inp['index']}" + (f" (target {_vector(inp['target'])})" if "target" in inp else "")
        else:
            what = f"x = {_vector(inp['x'])}"
        print(f"input {i}: {what}")
        print("  components:")
        for k, c in sorted(enumerate(rec["components"]), key=lambda kc: -kc[1]["pi"]):
            print(f"    {k + 1:>2}  pi = {c['pi']:.4f}  mu = {_vector(c['mu'])}  sigma = {_vector(c['sigma'])}")
        shown = [m for m in rec["modes"] if m["mass"] >= min_mass]
        print(f"  modes (mass >= {min_mass:g}, highest density first):")
        for j, m in enumerate(shown):
            print(f"    {j + 1:>2}  at {_vector(m['location'])}  mass = {m['mass']:.4f}  "
                  f"log density = {m['log_density']:.4g}")
        if "samples" in rec:
            head = ", ".join(_vector(s) for s in rec["samples"][:max_samples])
            more = f", ... ({len(rec['samples'])} in all)" if len(rec["samples"]) > max_samples else ""
            print(f"  samples: {head}{more}")


def run(args: argparse.Namespace) -> None:
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mdn_experiments.errors import UserError
    from mdn_experiments.experiment import load_run
    from mdn_experiments.train import predict

    sources = sum(bool(s) for s in (args.x, args.file, args.index))
    if sources != 1:
        raise PredictError("give the inputs in one way: --x VALUES (repeatable), --file FILE.csv|.npy "
                           "or --index N (repeatable, test-set examples)")
    if args.samples < 0:
        raise PredictError(f"--samples {args.samples}: must be >= 0")
    if not (args.temperature_pi > 0 and args.temperature_sigma > 0):
        raise PredictError("--temperature-pi and --temperature-sigma must be > 0")
    if args.out is not None and args.out.suffix not in (".json", ".csv"):
        raise PredictError(f"--out {args.out}: allowed formats are .json and .csv")
    try:
        network, _, config = load_run(args.run_dir)
        dataset = instantiate(OmegaConf.create(config["dataset"]))
    except UserError as err:
        raise PredictError(str(err)) from None
    input_shape = tuple(dataset.input_shape)
    inputs: list[dict[str, Any]]
    if args.index:
        try:
            x_test, y_test = dataset.load(config.get("seed", 0)).test
        except UserError as err:
            raise PredictError(str(err)) from None
        bad = [i for i in args.index if not 0 <= i < x_test.shape[0]]
        if bad:
            raise PredictError(f"--index {bad[0]}: the test set has {x_test.shape[0]} examples (0..{x_test.shape[0] - 1})")
        x = x_test[args.index]
        inputs = [{"index": i, "target": y_test[i].tolist()} for i in args.index]
    else:
        if args.x:
            if len(input_shape) != 1:
                raise PredictError(f"--x is for vector inputs; this model takes inputs of shape {input_shape}: "
                                   "use --file FILE.npy or --index N")
            array = _parse_x(args.x, input_shape[0])
        else:
            array = _read_file(args.file, input_shape)
        if not np.isfinite(array).all():
            raise PredictError("inputs must be finite numbers (nan and inf are not allowed)")
        x = torch.from_numpy(array)
        inputs = [{"x": [float(f"{v:.7g}") for v in row.reshape(-1)]} for row in array] if len(input_shape) == 1 \
            else [{"row": i} for i in range(len(array))]
    with torch.no_grad():
        mixture = predict(network, x)
        records = describe(mixture, args.samples, args.temperature_pi, args.temperature_sigma, args.seed)
    _print(inputs, records, args.min_mass)
    if args.out is not None:
        header = {"run": str(args.run_dir), "dataset": dataset.name, "K": mixture.n_components,
                  "covariance": type(mixture).covariance_kind, "temperature_pi": args.temperature_pi,
                  "temperature_sigma": args.temperature_sigma, "seed": args.seed}
        try:
            _write(args.out, header, inputs, records)
        except OSError as err:
            raise PredictError(f"--out {args.out} cannot be written: {err.strerror}") from None
        print(f"[{PROG}] wrote {args.out}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a finished run folder (holds model.pt)")
    p.add_argument("--x", action="append", metavar="VALUES", help="one input; comma-separated values")
    p.add_argument("--file", type=Path, help="inputs from a .csv or .npy file, one row per input")
    p.add_argument("--index", action="append", type=int, metavar="N", help="a test-set example by its index")
    p.add_argument("--samples", type=int, default=0, metavar="N", help="draw N samples per input (default 0)")
    p.add_argument("--temperature-pi", type=float, default=1.0, metavar="T",
                   help="sample with the pi logits divided by T (T < 1: sharper weights)")
    p.add_argument("--temperature-sigma", type=float, default=1.0, metavar="T",
                   help="sample with every component's standard deviation multiplied by T")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--min-mass", type=float, default=0.05, metavar="M",
                   help="print the modes holding at least this mass (default 0.05; files hold them all)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the answer to FILE.json or FILE.csv")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        run(args)
    except PredictError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
