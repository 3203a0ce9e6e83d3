"""Inference and deployment: the ``Detector`` API, streaming prediction, ONNX export, speed benchmark."""
