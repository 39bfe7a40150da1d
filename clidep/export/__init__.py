"""Export: the ONNX decoder graph, its surgery, quantisation, validation and the artifact directory."""
