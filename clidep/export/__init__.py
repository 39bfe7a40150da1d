"""Export: the ONNX decoder graph and its files, quantisation, validation, the GGUF and ExecuTorch files, and the manifest."""
