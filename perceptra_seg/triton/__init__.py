"""Triton Inference Server integration: ``serve-triton`` (server side, :mod:`.server`), the wire contract shared
with the ``triton`` backend (:mod:`.protocol`), and ``export-triton`` (a model repository of our ONNX graphs,
:mod:`.repository`). Importing this package needs neither PyTriton nor tritonclient."""
