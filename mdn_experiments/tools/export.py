"""`mdn-export RUN [--out FILE.onnx] [--force]`: a finished run's MDN as one ONNX file, for use where
torch is not (onnxruntime, any language it serves).

The file holds the whole path from raw inputs in the file's units to the mixture in the target's
units: the input standardisation, the network (every member of an ensemble, merged into one
mixture of members x K components), the head with its floors, and the map back to the target's
units. Inputs: `x` (N, *input_shape), float32, any N. Outputs: `log_weights` (N, K), `means`
(N, K, D) and `scales` (N, K, D), standard deviations per dimension, or for full covariance
`cholesky` (N, K, D, D), lower-triangular factors of each component's covariance.

Beside it, a JSON sidecar (FILE.json): the input shape and, for a table, the feature and target
names; the covariance kind, K and members; the run's headline metrics; package versions; the ONNX
file's SHA-256, checked by whoever loads it. The run folder is read as data (model.pt through the
same checks as mdn-predict); both files are written whole or not at all, never through a link.
Needs `pip install 'mdn-experiments[export]'` (onnx and onnxscript, torch's exporter).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

PROG = "mdn-export"
OPSET = 18
SIDECAR_VERSION = 1
INSTALL_EXPORT = "pip install 'mdn-experiments[export]'"
EXAMPLE_BATCH = 3  # the batch traced; the exported batch axis is dynamic


class ExportError(Exception):
    """A refusal of mdn-export: one line."""


def outputs_of(covariance: str) -> tuple[str, ...]:
    return ("log_weights", "means", "cholesky" if covariance == "full" else "scales")


def _module(network):
    """The network as a module returning plain tensors: (log_weights, means, scales | cholesky)."""
    import torch

    class MixtureOutputs(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            # Network.forward, with the map to the target's units written without a branch on the
            # scales' values (an isotropic mixture's affine() asks whether they are equal; the
            # exporter cannot trace a question about data): the same numbers, as per-dimension scales
            net = self.net
            mixture = net.head(net.backbone((x.contiguous() - net.x_mean) / net.x_std))
            if hasattr(mixture, "scale_tril"):
                mixture = mixture.affine(net.y_mean, net.y_std)
                return mixture.log_pi, mixture.mu, mixture.scale_tril
            return mixture.log_pi, net.y_mean + net.y_std * mixture.mu, net.y_std * mixture.sigma

    return MixtureOutputs(network).eval()


def onnx_bytes(network, input_shape: tuple[int, ...], covariance: str) -> bytes:
    """The serialized ONNX model of `network` (an MDN, in eval mode) for inputs of `input_shape`."""
    import torch

    try:
        import onnxscript  # noqa: F401 - torch's exporter builds the graph with it
    except ImportError:
        raise ExportError(f"exporting to ONNX needs onnx and onnxscript: {INSTALL_EXPORT}") from None
    module = _module(network)
    example = torch.zeros(EXAMPLE_BATCH, *input_shape)
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")  # the exporter's notes on operators this model never uses
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),  # the exporter reports its steps
            warnings.catch_warnings(),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside the exporter
            program = torch.onnx.export(
                module,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=list(outputs_of(covariance)),
                dynamic_shapes=({0: batch},),
                opset_version=OPSET,
                verbose=False,
            )
    finally:
        quiet.setLevel(level)
    return program.model_proto.SerializeToString()


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("mdn-experiments", "torch", "onnx", "onnxscript"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def check_target(target: Path, force: bool) -> None:
    """The export's two files may be written: TARGET ends in .onnx, and neither it nor its sidecar
    exists unless `force`."""
    if target.suffix != ".onnx":
        raise ExportError(f"--out {target}: the file must end in .onnx")
    for path in (target, target.with_suffix(".json")):
        if (path.exists() or path.is_symlink()) and not force:
            raise ExportError(f"{path} exists: choose another --out, or --force to replace it")


def export_run(run_dir: Path, out: Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """Export a finished run's MDN: (the ONNX file, its JSON sidecar)."""
    from mdn_experiments import files
    from mdn_experiments.errors import UserError
    from mdn_experiments.run.artifacts import load_trained

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ExportError(f"{run_dir}: no such run folder")
    if not (run_dir / "metrics.json").is_file():
        raise ExportError(f"{run_dir} holds no finished run (no metrics.json): finish it first (mdn-resume {run_dir})")
    try:
        metrics = files.read_json(run_dir / "metrics.json")
        network, _, dataset, checkpoint = load_trained(run_dir)
    except UserError as err:
        raise ExportError(str(err)) from None
    status = metrics.get("status", "ok")
    if status != "ok":
        raise ExportError(
            f"{run_dir} finished with status {status!r} ({metrics.get('status_reason', '')}): its mixture is not "
            "one to deploy"
        )
    target = out if out is not None else run_dir / "export" / "model.onnx"
    check_target(target, force)
    config = checkpoint["config"]
    model = config["model"]
    columns = checkpoint.get("columns") or {}
    headline = {key: metrics[key] for key in (metrics.get("main_metric"), "test_nll", "status") if key in metrics}
    return write_export(
        network,
        target,
        input_shape=tuple(dataset.input_shape),
        covariance=model.get("covariance", "diag"),
        K=int(config["K"]),
        members=int(model.get("members", 1) or 1),
        dataset=dataset.name,
        features=list(columns.get("features", [])),
        targets=list(columns.get("targets", [])),
        facts={
            "run": str(run_dir.resolve()),
            "metrics": headline,
        },
    )


def write_export(
    network,
    target: Path,
    *,
    input_shape: tuple[int, ...],
    covariance: str,
    K: int,
    members: int,
    dataset: str,
    features: list[str],
    targets: list[str],
    facts: dict[str, Any],
) -> tuple[Path, Path]:
    """`network` (an MDN) as TARGET.onnx and its sidecar TARGET.json (with `facts`: where the model
    came from and its scores), each written whole or not at all, never through a link."""
    from mdn_experiments import files

    network.eval()
    data = onnx_bytes(network, input_shape, covariance)
    sidecar: dict[str, Any] = {
        "format": "mdn-experiments ONNX export",
        "version": SIDECAR_VERSION,
        "onnx_file": target.name,
        "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "opset": OPSET,
        "input": {"name": "x", "shape": ["N", *input_shape], "dtype": "float32"},
        "outputs": list(outputs_of(covariance)),
        "covariance": covariance,
        "components": K * members,
        "K": K,
        "members": members,
        "target_dim": int(network.y_mean.numel()),
        "dataset": dataset,
        "features": features,
        "targets": targets,
        **facts,
        "versions": _versions(),
    }
    sidecar_path = target.with_suffix(".json")
    files.make_folder(target.parent)
    files.write_bytes(target, data)
    files.write_text(sidecar_path, json.dumps(sidecar, indent=2) + "\n")
    return target, sidecar_path


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=formatter)
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--out", type=Path, default=None, help="the .onnx file (default: RUN/export/model.onnx)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    from mdn_experiments.errors import UserError

    try:
        onnx_path, sidecar_path = export_run(args.run, args.out, args.force)
    except (ExportError, UserError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"[{PROG}] {onnx_path} (opset {OPSET}) and {sidecar_path}")


if __name__ == "__main__":
    main()
