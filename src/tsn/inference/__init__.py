"""Inference: predict every task of any images, the speed options, and the ONNX export."""
