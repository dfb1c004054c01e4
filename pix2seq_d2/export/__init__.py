"""Deployment: TorchScript and ONNX exports of the image encoder and of one cached decode step, and an
ONNX Runtime runner that decodes with them (:mod:`.exporter`)."""

from .exporter import OnnxPix2SeqRunner, export_onnx, export_torchscript

__all__ = ["OnnxPix2SeqRunner", "export_onnx", "export_torchscript"]
