"""Inference: the one pipeline from an image to every task's prediction (:mod:`tsn.inference.pipeline`), the one
input-size rule (:mod:`tsn.inference.input_size`), the saved-file conventions (:mod:`tsn.inference.conventions`),
``tsn.predict`` and ``tsn predict``, the speed options, and the ONNX export."""
