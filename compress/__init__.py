"""Model compression: structured pruning and quantization. Importing this package never imports torch_pruning."""

# --- pruning (compress/prune.py; torch_pruning is imported lazily inside its functions) ---
from compress.prune import IMPORTANCES as IMPORTANCES
from compress.prune import PruneConfig as PruneConfig
from compress.prune import PruneReport as PruneReport
from compress.prune import prune_model as prune_model

# --- end pruning ---
# --- quantization (compress/quantize.py; onnx / onnxruntime are imported lazily inside its functions) ---
from compress.quantize import QUANTIZERS as QUANTIZERS
from compress.quantize import QuantizeConfig as QuantizeConfig
from compress.quantize import QuantizeReport as QuantizeReport
from compress.quantize import export_onnx as export_onnx
from compress.quantize import quantize_model as quantize_model

# --- end quantization ---
