"""Deployment tooling: ONNX export, TensorRT operator checks, engine building and engine metadata."""
