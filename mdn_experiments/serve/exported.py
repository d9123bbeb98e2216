"""An exported MDN (`mdn-export`'s FILE.onnx and its FILE.json sidecar) asked through onnxruntime,
without torch: `pip install 'mdn-experiments[serve]'` (numpy and onnxruntime).

    from mdn_experiments.serve import load_exported
    model = load_exported("model.onnx")          # the sidecar's SHA-256 checked against the file
    mixture = model.predict(x)                   # x (N, *input_shape) -> serve.mixture.Mixture
    mixture.log_prob(y), mixture.mean(), mixture.modes(), mixture.sample(100, seed=0)

Both files are data: the sidecar is JSON whose every field is checked before use, and the ONNX
file is handed to onnxruntime from memory (no external data files, no custom operators).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mdn_experiments import files, memory
from mdn_experiments.errors import UserError, clip
from mdn_experiments.serve.mixture import Mixture

INSTALL_SERVE = "pip install 'mdn-experiments[serve]'"
SIDECAR_FORMAT = "mdn-experiments ONNX export"
SIDECAR_VERSIONS = (1,)
COVARIANCES = ("diag", "isotropic", "full")
MAX_ONNX_BYTES = 2 * 1024**3  # protobuf's own limit on one serialised model
PREDICT_BATCH = 4096  # inputs handed to onnxruntime at once


class ExportedModelError(UserError):
    """An exported model that cannot be used: its files are missing, damaged or do not match."""


def sidecar_of(path: Path) -> Path:
    return path.with_suffix(".json")


def _check_sidecar(sidecar: Any, where: str) -> dict[str, Any]:
    """The sidecar's fields, each of the type the predictor relies on."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ExportedModelError(f"{where}: {what}; it is not an intact sidecar of mdn-export")

    need(isinstance(sidecar, dict), "not a JSON object")
    need(sidecar.get("format") == SIDECAR_FORMAT, f"its format is not {SIDECAR_FORMAT!r}")
    need(sidecar.get("version") in SIDECAR_VERSIONS, f"version {sidecar.get('version')!r} is not one this reads")
    need(
        isinstance(sidecar.get("onnx_sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", sidecar["onnx_sha256"]),
        "onnx_sha256 is not a SHA-256 in hex",
    )
    shape = (sidecar.get("input") or {}).get("shape") if isinstance(sidecar.get("input"), dict) else None
    need(
        isinstance(shape, list)
        and len(shape) >= 2
        and shape[0] == "N"
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 1 << 24 for s in shape[1:]),
        "input.shape is not ['N', sizes...]",
    )
    need(sidecar.get("covariance") in COVARIANCES, f"covariance is not one of {', '.join(COVARIANCES)}")
    for key in ("components", "K", "members", "target_dim"):
        value = sidecar.get(key)
        need(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{key} is not a positive integer")
    for key in ("features", "targets"):
        names = sidecar.get(key, [])
        need(isinstance(names, list) and all(isinstance(n, str) for n in names), f"{key} is not a list of names")
    need(
        not sidecar.get("targets") or len(sidecar["targets"]) == sidecar["target_dim"], "targets and target_dim differ"
    )
    return sidecar


@dataclass
class ExportedModel:
    """A loaded export: its sidecar's facts and an onnxruntime session."""

    path: Path
    sidecar: dict[str, Any]
    session: Any

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.sidecar["input"]["shape"][1:])

    @property
    def covariance(self) -> str:
        return self.sidecar["covariance"]

    @property
    def features(self) -> list[str]:
        return list(self.sidecar.get("features", []))

    @property
    def targets(self) -> list[str]:
        return list(self.sidecar.get("targets", []))

    @property
    def n_components(self) -> int:
        return int(self.sidecar["components"])

    @property
    def target_dim(self) -> int:
        return int(self.sidecar["target_dim"])

    def predict(self, x: np.ndarray, batch_size: int = PREDICT_BATCH) -> Mixture:
        """The mixtures of inputs x (N, *input_shape), in the target's units."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape or x.shape[0] == 0:
            raise ExportedModelError(
                f"inputs of shape {x.shape}: this model takes (N, {', '.join(map(str, self.input_shape))})"
            )
        names = ["log_weights", "means", "cholesky" if self.covariance == "full" else "scales"]
        parts = [self.session.run(names, {"x": x[i : i + batch_size]}) for i in range(0, x.shape[0], batch_size)]
        log_weights, means, spread = (np.concatenate([p[j] for p in parts]) for j in range(3))
        full = self.covariance == "full"
        return Mixture(log_weights, means, None if full else spread, spread if full else None, self.covariance)


def load_exported(path: Path | str) -> ExportedModel:
    """FILE.onnx and FILE.json beside it, checked: the sidecar's fields, the file's SHA-256 against
    the sidecar's, and the model's inputs and outputs against what the sidecar says."""
    path = Path(path).expanduser()
    if path.suffix != ".onnx":
        raise ExportedModelError(f"{clip(path)}: an exported model is a .onnx file (made by mdn-export)")
    if not path.exists():
        raise ExportedModelError(f"{clip(path)}: no such file")
    sidecar_path = sidecar_of(path)
    if not sidecar_path.exists():
        raise ExportedModelError(
            f"{clip(path)} has no sidecar {sidecar_path.name} beside it: mdn-export writes both; keep them together"
        )
    try:
        sidecar = _check_sidecar(
            files.parse_json(files.read_text(sidecar_path, follow=True), str(sidecar_path)), str(sidecar_path)
        )
        size = files.regular_size(path, follow=True)
        memory.Estimate({f"the model {clip(path, 120)}": 3 * size}).check(
            memory.available_memory(), f"loading {clip(path)}", "use a machine with more memory"
        )
        data = files.read_bytes(path, MAX_ONNX_BYTES, follow=True)
    except OSError as err:
        raise ExportedModelError(f"{clip(path)} cannot be read ({err.strerror or type(err).__name__})") from None
    if hashlib.sha256(data).hexdigest() != sidecar["onnx_sha256"]:
        raise ExportedModelError(
            f"{clip(path)} does not match the SHA-256 in {sidecar_path.name}: the file was changed or damaged "
            "after export; export the run again"
        )
    try:
        import onnxruntime
    except ImportError:
        raise ExportedModelError(f"asking an exported model needs onnxruntime: {INSTALL_SERVE}") from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: no notes on the console
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - the runtime's complaint about the file is bad input
        raise ExportedModelError(
            f"{clip(path)} cannot be loaded by onnxruntime: {clip(' '.join(str(err).split()), 200)}"
        ) from None
    wanted = {"log_weights", "means", "cholesky" if sidecar["covariance"] == "full" else "scales"}
    outputs = {o.name for o in session.get_outputs()}
    inputs = [i.name for i in session.get_inputs()]
    if inputs != ["x"] or not wanted <= outputs:
        raise ExportedModelError(
            f"{clip(path)} takes {inputs} and gives {sorted(outputs)}; an export of mdn-export takes ['x'] "
            f"and gives {sorted(wanted)}"
        )
    return ExportedModel(path, sidecar, session)
