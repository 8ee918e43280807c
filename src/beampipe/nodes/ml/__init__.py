"""Machine-learning inference on each message: ``ml.onnx`` (see docs/nodes.md)."""
