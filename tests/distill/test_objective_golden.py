"""The objective gives the same loss values as before loss terms became registered objects.

EXPECTED was computed on a fixed batch with the objective as it was before the refactor (commit 7cd96ed), for every
term alone and together, with and without schedules, for classification, regression and token classification, one
teacher and two, and without a teacher. Each entry is the weighted total and every logged term, in logged order.
"""

from types import SimpleNamespace

import pytest
import torch

from distill.objective.ensemble import MultiTeacherObjective
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map

B, L = 3, 5
STUDENT = dict(width=4, layers=2, heads=2)
TEACHERS = [dict(width=6, layers=3, heads=3), dict(width=8, layers=2, heads=2)]
ALL = dict(hidden_weight=0.5, embedding_weight=0.25, cosine_weight=0.75, attention_weight=2.0, relation_weight=3.0)
CONFIGS = {
    "ce+kd": dict(hidden_weight=0.0, alpha=0.3, temperature=3.0),
    "defaults": {},
    "hidden": dict(hidden_weight=0.5),
    "embedding": dict(hidden_weight=0.0, embedding_weight=0.25),
    "cosine": dict(hidden_weight=0.0, cosine_weight=0.75),
    "attention-kl": dict(hidden_weight=0.0, attention_weight=2.0),
    "attention-mse": dict(hidden_weight=0.0, attention_weight=2.0, attention_loss="mse"),
    "relation": dict(hidden_weight=0.0, relation_weight=3.0, relation_layer=2),
    "all": ALL,
    "all-scheduled": dict(ALL, relation_heads=1, temperature=4.0, temperature_schedule="linear", temperature_end=1.0,
                          alpha=0.8, alpha_schedule="cosine", alpha_end=0.1, feature_schedule="linear",
                          feature_scale_end=0.0),
}
KINDS = ("classification", "regression", "token")
PROGRESS = 0.37
KIND_NAMES = {"classification": "ce_kl", "regression": "mse", "token": "token_ce_kl"}  # output-loss names


def _model_output(gen: torch.Generator, kind: str, shape: dict) -> SimpleNamespace:
    """A model's output on the batch: logits, hidden_states (layers + 1) and attention probabilities."""
    logits = {"classification": (B, 3), "regression": (B, 1), "token": (B, L, 3)}[kind]
    hidden = tuple(torch.randn(B, L, shape["width"], generator=gen) for _ in range(shape["layers"] + 1))
    attentions = tuple(torch.randn(B, shape["heads"], L, L, generator=gen).softmax(-1) for _ in range(shape["layers"]))
    return SimpleNamespace(logits=torch.randn(*logits, generator=gen), hidden_states=hidden, attentions=attentions)


def _qkv(gen: torch.Generator, width: int) -> dict[str, torch.Tensor]:
    return {k: torch.randn(B, L, width, generator=gen) for k in ("query", "key", "value")}


def _batch(kind: str):
    """Student output, teacher outputs, labels, attention mask and Q/K/V of both models, from a fixed seed."""
    gen = torch.Generator().manual_seed(0)
    student = _model_output(gen, kind, STUDENT)
    teachers = [_model_output(gen, kind, t) for t in TEACHERS]
    s_qkv, t_qkv = _qkv(gen, STUDENT["width"]), [_qkv(gen, t["width"]) for t in TEACHERS]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    if kind == "classification":
        labels = torch.tensor([0, 2, 1])
    elif kind == "regression":
        labels = torch.randn(B, generator=gen)
    else:
        labels = torch.tensor([[-100, 0, 2, 1, -100], [-100, 1, -100, -100, -100], [-100, 2, 0, -100, -100]])
    return student, teachers, labels, mask, s_qkv, t_qkv


def _objective(config: DistillConfig, kind: str, teacher: dict, named: bool = False) -> Objective:
    """As the pipeline builds it (``regression=``, token classification told by the logits), or ``named`` by kind."""
    if named:
        return Objective(config, kind=KIND_NAMES[kind], student_width=STUDENT["width"],
                         teacher_width=teacher["width"],
                         layer_map=uniform_layer_map(STUDENT["layers"], teacher["layers"]),
                         student_heads=STUDENT["heads"])
    return Objective(config, regression=kind == "regression", student_width=STUDENT["width"],
                     teacher_width=teacher["width"], layer_map=uniform_layer_map(STUDENT["layers"], teacher["layers"]),
                     student_heads=STUDENT["heads"])


def compute(case: str, kind: str, teachers: int, named: bool = False) -> tuple[float, dict[str, float]]:
    """The total and logged terms of one case: ``teachers`` 0 (no teacher), 1 (Objective) or 2 (ensemble)."""
    config = DistillConfig(**CONFIGS[case])
    torch.manual_seed(1)  # the projections
    if teachers == 2:
        objective = MultiTeacherObjective([_objective(config, kind, t, named) for t in TEACHERS], [0.7, 0.3])
    else:
        objective = _objective(config, kind, TEACHERS[0], named)
    objective.set_progress(PROGRESS)
    student, outs, labels, mask, s_qkv, t_qkv = _batch(kind)
    if teachers == 0:
        total, terms = objective(student, labels, None, mask)
    elif teachers == 1:
        total, terms = objective(student, labels, outs[0], mask, student_qkv=s_qkv, teacher_qkv=t_qkv[0])
    else:
        total, terms = objective(student, labels, outs, mask, student_qkv=s_qkv, teacher_qkv=t_qkv)
    return float(total.detach()), terms


CASES = [(case, kind, 1) for case in CONFIGS for kind in KINDS]
CASES += [(case, kind, 2) for case in ("ce+kd", "all", "all-scheduled") for kind in KINDS]
CASES += [("all", kind, 0) for kind in KINDS]

EXPECTED: dict[str, tuple[float, dict[str, float]]] = {
    'ce+kd/classification/1': (0.7714602947235107, {'ce': 1.2936116456985474, 'kd': 0.5476810932159424}),
    'ce+kd/regression/1': (0.6248239874839783, {'ce': 0.34749171137809753, 'kd': 0.7436806559562683}),
    'ce+kd/token/1': (0.8725433349609375, {'ce': 1.4595636129379272, 'kd': 0.6209631562232971}),
    'defaults/classification/1': (1.2904224395751953, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'hidden': 3.7307677268981934}),
    'defaults/regression/1': (0.8681069612503052, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'hidden': 3.225207805633545}),
    'defaults/token/1': (1.2947638034820557, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'hidden': 2.606328010559082}),
    'hidden/classification/1': (2.7827296257019043, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'hidden': 3.7307677268981934}),
    'hidden/regression/1': (2.1581900119781494, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'hidden': 3.225207805633545}),
    'hidden/token/1': (2.3372950553894043, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'hidden': 2.606328010559082}),
    'embedding/classification/1': (1.2667808532714844, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'embedding': 1.3977408409118652}),
    'embedding/regression/1': (0.8453261852264404, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'embedding': 1.1989599466323853}),
    'embedding/token/1': (1.3073620796203613, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'embedding': 1.0929245948791504}),
    'cosine/classification/1': (1.6558150053024292, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'cosine': 0.9846257567405701}),
    'cosine/regression/1': (1.2628705501556396, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'cosine': 0.9563791751861572}),
    'cosine/token/1': (1.8545256853103638, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'cosine': 1.0938596725463867}),
    'attention-kl/classification/1': (1.9070706367492676, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'attention': 0.49486246705055237}),
    'attention-kl/regression/1': (1.7515544891357422, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'attention': 0.6029841303825378}),
    'attention-kl/token/1': (2.040950298309326, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'attention': 0.5034096240997314}),
    'attention-mse/classification/1': (1.0048338174819946, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'attention': 0.04374406114220619}),
    'attention-mse/regression/1': (0.6534224152565002, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'attention': 0.053918130695819855}),
    'attention-mse/token/1': (1.1208250522613525, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'attention': 0.04334709048271179}),
    'relation/classification/1': (5.561159133911133, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'relation': 1.5479378700256348}),
    'relation/regression/1': (4.00637674331665, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'relation': 1.1535968780517578}),
    'relation/token/1': (5.102625846862793, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'relation': 1.3561649322509766}),
    'all/classification/1': (9.678325653076172, {
        'ce': 1.2936116456985474, 'kd': 0.5410797595977783, 'hidden': 3.7307677268981934,
        'embedding': 1.6061683893203735, 'cosine': 1.1473537683486938, 'attention': 0.49486246705055237,
        'relation': 1.5479378700256348}),
    'all/regression/1': (7.97613525390625, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'hidden': 3.225207805633545,
        'embedding': 1.2806211709976196, 'cosine': 1.108041524887085, 'attention': 0.6029841303825378,
        'relation': 1.1535968780517578}),
    'all/token/1': (8.61587142944336, {
        'ce': 1.4595636129379272, 'kd': 0.608698308467865, 'hidden': 2.606328010559082, 'embedding': 1.3183231353759766,
        'cosine': 1.1649088859558105, 'attention': 0.5034096240997314, 'relation': 1.3561649322509766}),
    'all-scheduled/classification/1': (6.076260566711426, {
        'ce': 1.2936116456985474, 'kd': 0.5473237633705139, 'hidden': 3.7307677268981934,
        'embedding': 1.6061683893203735, 'cosine': 1.1473537683486938, 'attention': 0.49486246705055237,
        'relation': 1.3204007148742676}),
    'all-scheduled/regression/1': (4.909642219543457, {
        'ce': 0.34749171137809753, 'kd': 0.7436806559562683, 'hidden': 3.225207805633545,
        'embedding': 1.2806211709976196, 'cosine': 1.108041524887085, 'attention': 0.6029841303825378,
        'relation': 1.0044286251068115}),
    'all-scheduled/token/1': (5.532662391662598, {
        'ce': 1.4595636129379272, 'kd': 0.6202298998832703, 'hidden': 2.606328010559082,
        'embedding': 1.3183231353759766, 'cosine': 1.1649088859558105, 'attention': 0.5034096240997314,
        'relation': 1.1665174961090088}),
    'ce+kd/classification/2': (0.7172514200210571, {'ce': 1.2936116456985474, 'kd': 0.47023987770080566}),
    'ce+kd/regression/2': (0.5608443021774292, {'ce': 0.34749171137809753, 'kd': 0.6522811055183411}),
    'ce+kd/token/2': (0.7789894342422485, {'ce': 1.4595636129379272, 'kd': 0.48731473088264465}),
    'all/classification/2': (9.847955703735352, {
        'ce': 1.2936116456985474, 'kd': 0.46393656730651855, 'hidden_t1': 3.7307677268981934,
        'embedding_t1': 1.6061683893203735, 'cosine_t1': 1.1473537683486938, 'attention_t1': 0.49486246705055237,
        'relation_t1': 1.5479378700256348, 'hidden_t2': 2.5366430282592773, 'embedding_t2': 1.4756131172180176,
        'cosine_t2': 1.0037862062454224, 'attention_t2': 1.152031660079956, 'relation_t2': 1.5869513750076294,
        'hidden': 3.372530460357666, 'embedding': 1.5670018196105957, 'cosine': 1.1042834520339966,
        'attention': 0.6920132637023926, 'relation': 1.55964195728302}),
    'all/regression/2': (8.286050796508789, {
        'ce': 0.34749171137809753, 'kd': 0.6522811055183411, 'hidden_t1': 3.225207805633545,
        'embedding_t1': 1.2806211709976196, 'cosine_t1': 1.108041524887085, 'attention_t1': 0.6029841303825378,
        'relation_t1': 1.1535968780517578, 'hidden_t2': 2.927865982055664, 'embedding_t2': 1.521611213684082,
        'cosine_t2': 0.9817230701446533, 'attention_t2': 1.0848287343978882, 'relation_t2': 1.288548469543457,
        'hidden': 3.136005163192749, 'embedding': 1.3529181480407715, 'cosine': 1.0701459646224976,
        'attention': 0.7475374937057495, 'relation': 1.1940823793411255}),
    'all/token/2': (8.647695541381836, {
        'ce': 1.4595636129379272, 'kd': 0.4698582589626312, 'hidden_t1': 2.606328010559082,
        'embedding_t1': 1.3183231353759766, 'cosine_t1': 1.1649088859558105, 'attention_t1': 0.5034096240997314,
        'relation_t1': 1.3561649322509766, 'hidden_t2': 2.583768367767334, 'embedding_t2': 1.5625349283218384,
        'cosine_t2': 0.8871662020683289, 'attention_t2': 1.0266785621643066, 'relation_t2': 1.1726566553115845,
        'hidden': 2.599560260772705, 'embedding': 1.3915866613388062, 'cosine': 1.0815861225128174,
        'attention': 0.660390317440033, 'relation': 1.301112413406372}),
    'all-scheduled/classification/2': (6.169678688049316, {
        'ce': 1.2936116456985474, 'kd': 0.4698854386806488, 'hidden_t1': 3.7307677268981934,
        'embedding_t1': 1.6061683893203735, 'cosine_t1': 1.1473537683486938, 'attention_t1': 0.49486246705055237,
        'relation_t1': 1.3204007148742676, 'hidden_t2': 2.5366430282592773, 'embedding_t2': 1.4756131172180176,
        'cosine_t2': 1.0037862062454224, 'attention_t2': 1.152031660079956, 'relation_t2': 1.3489702939987183,
        'hidden': 3.372530460357666, 'embedding': 1.5670018196105957, 'cosine': 1.1042834520339966,
        'attention': 0.6920132637023926, 'relation': 1.3289716243743896}),
    'all-scheduled/regression/2': (5.141122817993164, {
        'ce': 0.34749171137809753, 'kd': 0.6522811055183411, 'hidden_t1': 3.225207805633545,
        'embedding_t1': 1.2806211709976196, 'cosine_t1': 1.108041524887085, 'attention_t1': 0.6029841303825378,
        'relation_t1': 1.0044286251068115, 'hidden_t2': 2.927865982055664, 'embedding_t2': 1.521611213684082,
        'cosine_t2': 0.9817230701446533, 'attention_t2': 1.0848287343978882, 'relation_t2': 1.2187600135803223,
        'hidden': 3.136005163192749, 'embedding': 1.3529181480407715, 'cosine': 1.0701459646224976,
        'attention': 0.7475374937057495, 'relation': 1.068727970123291}),
    'all-scheduled/token/2': (5.5327043533325195, {
        'ce': 1.4595636129379272, 'kd': 0.48607757687568665, 'hidden_t1': 2.606328010559082,
        'embedding_t1': 1.3183231353759766, 'cosine_t1': 1.1649088859558105, 'attention_t1': 0.5034096240997314,
        'relation_t1': 1.1665174961090088, 'hidden_t2': 2.583768367767334, 'embedding_t2': 1.5625349283218384,
        'cosine_t2': 0.8871662020683289, 'attention_t2': 1.0266785621643066, 'relation_t2': 0.9678330421447754,
        'hidden': 2.599560260772705, 'embedding': 1.3915866613388062, 'cosine': 1.0815861225128174,
        'attention': 0.660390317440033, 'relation': 1.1069121360778809}),
    'all/classification/0': (1.2936116456985474, {'ce': 1.2936116456985474}),
    'all/regression/0': (0.34749171137809753, {'ce': 0.34749171137809753}),
    'all/token/0': (1.4595636129379272, {'ce': 1.4595636129379272}),
}


@pytest.mark.parametrize("case,kind,teachers", CASES, ids=[f"{c}-{k}-{n}" for c, k, n in CASES])
def test_loss_values_are_unchanged(case, kind, teachers):
    total, terms = compute(case, kind, teachers)
    want_total, want_terms = EXPECTED[f"{case}/{kind}/{teachers}"]
    assert list(terms) == list(want_terms)  # the same terms, logged in the same order
    for name, value in want_terms.items():
        assert terms[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    assert total == pytest.approx(want_total, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("teachers", [0, 1, 2])
def test_naming_the_task_kind_gives_the_same_values(kind, teachers):
    total, terms = compute("all", kind, teachers, named=True)
    want_total, want_terms = EXPECTED[f"all/{kind}/{teachers}"]
    assert terms == pytest.approx(want_terms, rel=1e-6, abs=1e-9) and total == pytest.approx(want_total, rel=1e-6)
