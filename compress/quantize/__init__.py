"""ONNX export with the task kind's graph signature (``export``), INT8 through ONNX Runtime: dynamic and static
quantization (``int8``), accuracy-aware INT8 (``tolerance``), quantization-aware training (``qat``), CPU targets
(``targets``) and the speed check (``speed``)."""
