"""Model compression: structured pruning and quantization. Importing this package never imports torch_pruning."""

# --- pruning (compress/prune.py & co; torch_pruning is imported lazily inside their functions) ---
from compress.importance import kd_loss_fn as kd_loss_fn
from compress.layout import Layout as Layout
from compress.loading import WIDTHS_FILE as WIDTHS_FILE
from compress.loading import load_pruned as load_pruned
from compress.loading import needs_widths_file as needs_widths_file
from compress.loading import save_pruned as save_pruned
from compress.prune import IMPORTANCES as IMPORTANCES
from compress.prune import PruneConfig as PruneConfig
from compress.prune import PruneReport as PruneReport
from compress.prune import parse_ratio as parse_ratio
from compress.prune import prune_model as prune_model
from compress.prune_schedule import plan_steps as plan_steps
from compress.prune_schedule import ratio_schedule as ratio_schedule
from compress.prune_schedule import step_configs as step_configs
from compress.prune_schedule import step_ratios as step_ratios

# --- end pruning ---
# --- quantization (compress/quantize.py; onnx / onnxruntime are imported lazily inside its functions) ---
from compress.qat import export_qat_onnx as export_qat_onnx
from compress.qat import prepare_qat as prepare_qat
from compress.qat import strip_qat as strip_qat
from compress.quantize import CALIBRATIONS as CALIBRATIONS
from compress.quantize import QUANTIZERS as QUANTIZERS
from compress.quantize import QuantizeConfig as QuantizeConfig
from compress.quantize import QuantizeReport as QuantizeReport
from compress.quantize import export_onnx as export_onnx
from compress.quantize import quantize_model as quantize_model
from compress.speed import speed_check as speed_check
from compress.targets import TARGETS as TARGETS
from compress.targets import detect_target as detect_target
from compress.tolerance import ToleranceReport as ToleranceReport
from compress.tolerance import quantize_with_tolerance as quantize_with_tolerance

# --- end quantization ---
