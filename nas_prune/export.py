"""Weights and ONNX for exported architectures."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._io import load_state_dict, save_state_dict
from .errors import UserError
from .widths import ArchSpec


def save_weights(model: nn.Module, path: str | Path) -> Path:
    return save_state_dict(model, path)


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict with ``weights_only=True``; a mismatch is a one-line UserError."""
    state = load_state_dict(path, what="weights")
    try:
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise UserError(f"weights {path}: do not fit this architecture ({type(exc).__name__}); "
                        f"use the .pt written beside the YAML") from None
    return model


def export_onnx(model: nn.Module, spec: ArchSpec, path: str | Path) -> Path:
    """ONNX export with a dynamic batch dimension (needs the ``onnx`` extra).

    Uses torch's ``torch.export``-based exporter (``dynamo=True``); the TorchScript one is
    deprecated. Input ``images`` (N, C, H, W) float32, output ``logits`` (N, classes).
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401  (the exporter's dependency)
    except ImportError:
        raise UserError("--onnx: the onnx/onnxscript packages are missing; pip install "
                        "'nas-prune[onnx]'") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = spec.input
    x = torch.zeros(2, s.channels, s.size, s.size)
    model = model.cpu().eval()
    torch.onnx.export(model, (x,), str(path), input_names=["images"], output_names=["logits"],
                      dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                      verbose=False)
    return path


#: largest |logit| difference between ONNX and PyTorch, relative to the logits' scale (1 at least)
ONNX_TOLERANCE = 1e-4


def onnx_difference(model: nn.Module, spec: ArchSpec, path: str | Path, *, n: int = 4,
                    seed: int = 0) -> tuple[float, bool] | None:
    """(largest absolute difference between the logits of the ONNX file run by onnxruntime
    (CPU) and of ``model`` in eval mode on ``n`` seeded random images, whether it is within
    :data:`ONNX_TOLERANCE` of the logits' scale); None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    s = spec.input
    x = torch.randn(n, s.channels, s.size, s.size, generator=torch.Generator().manual_seed(seed))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"images": x.numpy()})
    model = model.cpu().eval()
    with torch.no_grad():
        want = model(x)
    diff = float((torch.from_numpy(got) - want).abs().max())
    return diff, diff <= ONNX_TOLERANCE * max(1.0, float(want.abs().max()))
