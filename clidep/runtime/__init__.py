"""The torch-free runtime: numpy and ONNX Runtime only. It runs on the device, where neither
torch nor transformers is installed; nothing here may import them (a test checks)."""
