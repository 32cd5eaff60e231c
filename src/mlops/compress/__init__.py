"""Compress a registered version: ONNX export and int8 quantization, each variant scored,
gated against its parent and registered with its lineage (`make compress`)."""
