"""A trained MDN away from its run folder and from torch: the numpy mixture maths of every
prediction (`serve.mixture`) and an exported model asked through onnxruntime (`serve.exported`).
`pip install 'mdn-experiments[serve]'` (numpy and onnxruntime) is all this package needs."""

from mdn_experiments.serve.exported import ExportedModel, load_exported
from mdn_experiments.serve.mixture import Mixture, Modes

__all__ = ["ExportedModel", "Mixture", "Modes", "load_exported"]
