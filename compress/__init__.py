"""Model compression: structured pruning and quantization. Importing this package never imports torch_pruning."""

# --- pruning (compress/prune/; torch_pruning is imported lazily inside their functions) ---
from compress.prune.importance import kd_loss_fn as kd_loss_fn
from compress.prune.io import WIDTHS_FILE as WIDTHS_FILE
from compress.prune.io import load_pruned as load_pruned
from compress.prune.io import needs_widths_file as needs_widths_file
from compress.prune.io import save_pruned as save_pruned
from compress.prune.layout import Layout as Layout
from compress.prune.pruner import IMPORTANCES as IMPORTANCES
from compress.prune.pruner import PruneConfig as PruneConfig
from compress.prune.pruner import PruneReport as PruneReport
from compress.prune.pruner import parse_ratio as parse_ratio
from compress.prune.pruner import prune_model as prune_model
from compress.prune.schedule import plan_steps as plan_steps
from compress.prune.schedule import ratio_schedule as ratio_schedule
from compress.prune.schedule import step_configs as step_configs
from compress.prune.schedule import step_ratios as step_ratios
from compress.quantize.int8 import CALIBRATIONS as CALIBRATIONS
from compress.quantize.int8 import QUANTIZERS as QUANTIZERS
from compress.quantize.int8 import QuantizeConfig as QuantizeConfig
from compress.quantize.int8 import QuantizeReport as QuantizeReport
from compress.quantize.int8 import export_onnx as export_onnx
from compress.quantize.int8 import quantize_model as quantize_model

# --- end pruning ---
# --- quantization (compress/quantize/; onnx / onnxruntime are imported lazily inside its functions) ---
from compress.quantize.qat import export_qat_onnx as export_qat_onnx
from compress.quantize.qat import prepare_qat as prepare_qat
from compress.quantize.qat import strip_qat as strip_qat
from compress.quantize.speed import speed_check as speed_check
from compress.quantize.targets import TARGETS as TARGETS
from compress.quantize.targets import detect_target as detect_target
from compress.quantize.tolerance import ToleranceReport as ToleranceReport
from compress.quantize.tolerance import quantize_with_tolerance as quantize_with_tolerance

# --- end quantization ---
