"""Export a checkpoint to ONNX, for runtimes other than PyTorch (onnxruntime, TensorRT, Triton).

    python -m training.export_onnx weights/autoencoder.safetensors          # into weights/onnx/
    python -m training.export_onnx CHECKPOINT --out DIR

Three models, each with a dynamic batch axis and computing what the service answers:
- ``encoder.onnx``: images (N,1,28,28) float32 in [0,1] -> latents (N,16,7,7);
- ``decoder.onnx``: latents -> images (N,1,28,28), clamped to [0,1];
- ``autoencoder.onnx``: images -> reconstructions, clamped to [0,1].
Each carries the checkpoint's sha256 and architecture in its metadata (``metadata_props``), so a
deployed file can be traced back to the weights it came from. The exporter is torch.export's
(``dynamo=True``), which needs the ``onnx`` and ``onnxscript`` packages (the ``[train]`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch
from torch import nn

from service.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from service.model import AutoEncoder

log = logging.getLogger(__name__)


class _Encoder(nn.Module):
    def __init__(self, model: AutoEncoder) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N,1,28,28) -> (N,16,7,7)
        return self.model.encode(images)


class _Decoder(_Encoder):
    def forward(self, latents: torch.Tensor) -> torch.Tensor:  # (N,16,7,7) -> (N,1,28,28) in [0,1]
        return self.model.decode_images(latents)


class _AutoEncoder(_Encoder):
    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N,1,28,28) -> (N,1,28,28) in [0,1]
        return self.model.reconstruct(images)


def export(checkpoint: Checkpoint, out: Path) -> dict[str, Path]:
    """Write the three ONNX files into ``out``; returns their paths by name."""
    import onnx  # the [train] extra; imported here so the rest of training does not need it

    model = checkpoint.model.float().eval()
    config = checkpoint.config
    images = torch.rand(2, *config.image_shape)
    latents = model.encode(images).detach()
    parts = {
        "encoder": (_Encoder(model), images, "images", "latents"),
        "decoder": (_Decoder(model), latents, "latents", "images"),
        "autoencoder": (_AutoEncoder(model), images, "images", "reconstructions"),
    }
    metadata = {
        "checkpoint_sha256": checkpoint.sha256,
        "architecture": json.dumps(config.to_dict()),
        "source": "python -m training.export_onnx",
    }
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (module, example, input_name, output_name) in parts.items():
        path = out / f"{name}.onnx"
        batch = torch.export.Dim("batch", min=1, max=65536)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
        if program is None:  # only the legacy exporter (dynamo=False) returns nothing
            raise RuntimeError("torch.onnx.export returned no program")
        proto = program.model_proto
        for key, value in metadata.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, path)
        written[name] = path
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.export_onnx",
        description="Export a checkpoint's encoder, decoder and whole autoencoder to ONNX (dynamic batch axis).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="a .safetensors checkpoint")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: onnx/ beside it)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        checkpoint = load_checkpoint(args.checkpoint, allow_seed_format=False)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out or checkpoint.path.parent / "onnx"
    for name, path in export(checkpoint, out).items():
        print(f"{name:12s} {path}  ({path.stat().st_size / 1024:.0f} KB)")
    print(f"checkpoint sha256 {checkpoint.sha256} recorded in each file's metadata")
    return 0


if __name__ == "__main__":
    sys.exit(main())
