"""Models that leave the toolkit: a fine-tuning run's network as an ONNX file (``medssl.export.onnx``), a
pretrained encoder in other toolkits' key layouts. Submodules are imported where used, so that a missing
optional extra (onnx, onnxruntime) only matters to the one who exports."""
