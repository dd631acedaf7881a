"""PyTorch checkpoint -> one fused ONNX graph (waveform to embeddings) and its keyword graph; numpy and onnx, no torch."""

from kwmlp.export.onnx_export import ExportOptions, build_fixed_model, build_models, export_checkpoint

__all__ = ["ExportOptions", "build_fixed_model", "build_models", "export_checkpoint"]
