"""Chapter parameters: the profile's values with the caller's over them, every value checked before anything trains.

Both ways of executing a chapter resolve through :func:`resolve`: ``ctcbook run`` before any kernel starts, then
injects only ``profile`` and its ``-p`` overrides; papermill run directly injects what it is given, and the
notebook's first cell after its parameters cell calls :func:`resolve_notebook`, which reads the names the parameters
cell and papermill's injected cell assign. So both entry points give the same values and the same refusals: one
:class:`ParameterError` naming the parameter, the bad value and what is allowed (unknown names included). Type and
range checks import nothing heavy, so ``ctcbook run -p epochs -1`` is refused before torch is even imported.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Any, Callable, Mapping

import yaml

from .profiles import PARAMETER_DEFAULTS, PROFILES


class ParameterError(ValueError):
    """A chapter parameter (or the profile) is unknown, of the wrong type, out of range or inconsistent."""


def parse_value(text: str) -> Any:
    """A command-line parameter value: YAML scalars and lists (``200``, ``0.05``, ``[0,1]``, ``null``, ``abc``)."""
    return yaml.safe_load(text)


# --- what each parameter may be ----------------------------------------------------------------------------
def _datasets() -> tuple[str, ...]:
    from ..data import available_datasets
    from ..data.stream import STREAMED

    return tuple(available_datasets()) + tuple(n for n in STREAMED if n not in available_datasets())


def _targets() -> tuple[str, ...]:
    from ..targets import TARGETS

    return tuple(sorted(TARGETS))


def _protocols() -> tuple[str, ...]:
    from ..probes import PROTOCOLS

    return tuple(PROTOCOLS)


def _mine_presets() -> tuple[str, ...]:
    from ..chapters.ch2_information import MINE_PRESETS

    return tuple(MINE_PRESETS)


def _augments() -> tuple[str, ...]:
    from ..config import AUGMENTS

    return tuple(AUGMENTS)


def _archs() -> tuple[str, ...]:
    from ..models.resnet import ARCHS

    return tuple(ARCHS)


def _backends() -> tuple[str, ...]:
    from ..dispatch import BACKENDS

    return tuple(BACKENDS)


def _fusion_methods() -> tuple[str, ...]:
    from ..models.fusion import EXTRA_METHODS, FUSION_METHODS

    return tuple(FUSION_METHODS + EXTRA_METHODS)


def _e2e_methods() -> tuple[str, ...]:
    from ..config import E2E_METHODS

    return tuple(E2E_METHODS)


_POSITIVE = 1e-12  # "greater than zero" for learning rates and temperatures


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one parameter may be.

    kind: "int", "float", "bool", "str", "name" (one of ``choices()``), or a list of "int", "float" or "name".
    low/high: inclusive bounds (``high_open``: high excluded) for numbers and list items; nullable: None allowed.
    """
    kind: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    nullable: bool = False
    choices: Callable[[], tuple[str, ...]] | None = None
    nonempty: bool = True

    def describe(self) -> str:
        """What is allowed, in words: "an integer >= 1", "a non-empty list of names from [...]"."""
        is_list = self.kind.startswith("list of ")
        item = self.kind.removeprefix("list of ")
        words = {"int": ("an integer", "integers"), "float": ("a number", "numbers"), "bool": ("true or false", ""),
                 "str": ("a string", "strings"), "name": ("one of", "names from")}[item][is_list]
        if item == "name":
            words += f" {list(self.choices())}"
        if self.low is not None and self.high is not None:
            words += f" in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            words += f" > 0" if self.low == _POSITIVE else f" >= {self.low:g}"
        if is_list:
            words = f"a {'non-empty ' if self.nonempty else ''}list of {words}"
        return words + (", or null" if self.nullable else "")


def _count(low=1, nullable=False) -> Spec:
    return Spec("int", low=low, nullable=nullable)


def _num(low=0.0, high=None, high_open=False) -> Spec:
    return Spec("float", low=low, high=high, high_open=high_open)


SPECS: dict[str, Spec] = {
    # the source run (chapters 1-5)
    "source": Spec("name", choices=_datasets),
    "source_classes": Spec("list of int", low=0, nullable=True),
    "train_size": _count(nullable=True),
    "arch": Spec("name", choices=_archs),
    "depth": _count(), "width": _count(), "stem_stride": _count(),
    "epochs": _count(), "batch_size": _count(),
    "augment": Spec("name", choices=_augments), "crop_padding": _count(0),
    "lr": _num(_POSITIVE), "weight_decay": _num(),
    "seeds": Spec("list of int", low=0),
    "backbone_seed": _count(0),
    # how runs are trained (ctcbook.dispatch; ctcbook.launch for nproc > 1)
    "backend": Spec("name", choices=_backends), "workers": _count(nullable=True), "nproc": _count(),
    # probes (chapters 1, 2, 3, 5)
    "targets": Spec("list of name", choices=_targets),
    "target_train_size": _count(nullable=True), "target_test_size": _count(nullable=True),
    "probe_every": _count(),
    "paper_protocol": Spec("name", choices=_protocols, nullable=True), "paper_protocol_seed": _count(0),
    # information estimators (chapters 2, 3)
    "info_every": _count(), "renyi_n": _count(2),
    "mine_seeds": Spec("list of int", low=0), "mine_every": _count(), "mine_restarts": _count(),
    "mine_n": _count(2, nullable=True),
    "mine_preset": Spec("name", choices=_mine_presets),
    "mine_splits": Spec("list of name", choices=lambda: ("source", *_targets()), nullable=True),
    # CTC (chapters 3, 5)
    "stage_two_epoch": _count(), "weight_decay_coef": _num(), "lr_restart": _num(),
    "alpha": _num(), "beta": _num(), "instance_t": _num(_POSITIVE), "instance_m": _num(0, 1, True),
    "nce_t": _num(_POSITIVE), "nce_m": _num(0, 1, True), "embed_dim": _count(), "nce_k": _count(),
    "refill": Spec("bool"), "train_instance_head": Spec("bool"),
    "discrim_alpha": _num(), "discrim_beta": _num(), "discrim_instance_t": _num(_POSITIVE),
    "discrim_nce_t": _num(_POSITIVE), "discrim_seeds": Spec("list of int", low=0, nonempty=False),
    "ablation_seeds": Spec("list of int", low=0, nonempty=False), "control_probe_every": _count(),
    # fusion heads, end-to-end fusion networks and simulated metadata (chapter 4)
    "methods": Spec("list of name", choices=_fusion_methods),
    "e2e_methods": Spec("list of name", choices=_e2e_methods),
    "interactions": Spec("list of float", low=0, high=1), "test_size": _count(nullable=True),
    "heldout": _count(nullable=True), "warmup_epochs": _count(0), "mixup_alpha": _num(),
    "head_smoothing": Spec("name", choices=lambda: ("torch", "public")),
    "head_epochs": _count(), "head_batch_size": _count(), "head_lr": _num(_POSITIVE), "head_weight_decay": _num(),
    "label_smoothing": _num(0, 1, True), "meta_width": _count(), "reduced_dim": _count(), "hidden_dim": _count(),
    "num_blocks": _count(), "metadata_seed": _count(0), "location_spread": _num(_POSITIVE),
    "date_spread": _num(_POSITIVE), "background": _num(0, 1), "missing_fraction": _num(0, 1, True),
    "confusable": Spec("list of int", low=0, nonempty=False), "tsne_points": _count(2),
    "explorer_days": Spec("list of int", low=1, high=366), "inat_root": Spec("str"),
}


def _type_name(value: Any) -> str:
    return {str: "a string", bool: "a bool", list: "a list", type(None): "null"}.get(type(value),
                                                                                 type(value).__name__)


def _bad(chapter: str, name: str, value: Any, spec: Spec, why: str = "") -> ParameterError:
    textual = spec.kind.removeprefix("list of ") in ("str", "name")
    got = f"{value!r} ({_type_name(value)})" if isinstance(value, str) and not textual else repr(value)
    return ParameterError(f"parameter {name!r} of chapter {chapter} must be {spec.describe()}, got {got}"
                          + (f": {why}" if why else ""))


def _check_scalar(chapter: str, name: str, value: Any, kind: str, spec: Spec, whole: Any) -> Any:
    """``value`` converted to ``kind`` if acceptable; raises ParameterError otherwise (no name checks here)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(chapter, name, whole, spec)
        return value
    if kind in ("str", "name"):
        if not isinstance(value, str):
            raise _bad(chapter, name, whole, spec)
        return value
    if isinstance(value, bool):
        raise _bad(chapter, name, whole, spec)
    if kind == "float" and isinstance(value, str):
        try:  # YAML 1.1 reads 5e-4 (no dot) as a string; accept what Python reads as a finite number
            value = float(value)
        except ValueError:
            raise _bad(chapter, name, whole, spec) from None
    if kind == "int" and not isinstance(value, int) or kind == "float" and not isinstance(value, (int, float)):
        raise _bad(chapter, name, whole, spec)
    if kind == "float" and value != value or value in (float("inf"), float("-inf")):
        raise _bad(chapter, name, whole, spec)
    if spec.low is not None and value < spec.low or spec.high is not None and (
            value >= spec.high if spec.high_open else value > spec.high):
        raise _bad(chapter, name, whole, spec)
    return value


def spec_for(name: str, default: Any = None) -> Spec:
    """:data:`SPECS` entry of ``name``; for a parameter not listed there (a notebook outside the book), a spec of
    its default's type."""
    if name in SPECS:
        return SPECS[name]
    kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(type(default))
    return Spec(kind, nullable=True) if kind else Spec("any")


def check_value(chapter: str, name: str, value: Any, default: Any = None) -> Any:
    """Type and range of one parameter (no name lookups); returns the value, lists as lists."""
    spec = spec_for(name, default)
    if spec.kind == "any":
        return value
    if value is None:
        if spec.nullable:
            return None
        raise _bad(chapter, name, value, spec)
    if spec.kind.startswith("list of "):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or spec.nonempty and not value:
            raise _bad(chapter, name, value, spec)
        return [_check_scalar(chapter, name, v, spec.kind[8:], spec, value) for v in value]
    return _check_scalar(chapter, name, value, spec.kind, spec, value)


def _check_names(chapter: str, name: str, value: Any) -> None:
    spec = spec_for(name)
    if spec.choices is None or value is None:
        return
    allowed = spec.choices()
    bad = [v for v in (value if isinstance(value, list) else [value]) if v not in allowed
           and not (name == "targets" and isinstance(v, str) and v.startswith("folder:"))]  # a user's ImageFolder
    if bad:
        raise _bad(chapter, name, value, spec, f"unknown {bad[0]!r}" if isinstance(value, list) else "")


def _check_consistency(chapter: str, p: dict[str, Any]) -> None:
    if "stage_two_epoch" in p and not p["stage_two_epoch"] < p["epochs"]:
        raise ParameterError(f"parameter 'stage_two_epoch' of chapter {chapter} must be below epochs "
                             f"({p['epochs']}) so that stage 2 of CTC has epochs, got {p['stage_two_epoch']}")
    for name in ("mine_seeds", "discrim_seeds", "ablation_seeds"):  # compared with the same seeds' baseline
        if name in p and not set(p[name]) <= set(p["seeds"]):
            raise ParameterError(f"parameter {name!r} of chapter {chapter} must be a subset of seeds "
                                 f"{p['seeds']}, got {p[name]}")
    if p.get("mine_splits") is not None and not set(p["mine_splits"]) <= {"source", *p.get("targets", [])}:
        raise ParameterError(f"parameter 'mine_splits' of chapter {chapter} must be None or a subset of "
                             f"['source', *targets] = {['source', *p.get('targets', [])]}, got {p['mine_splits']}")
    if "warmup_epochs" in p and not p["warmup_epochs"] < p["epochs"]:
        raise ParameterError(f"parameter 'warmup_epochs' of chapter {chapter} must be below epochs "
                             f"({p['epochs']}), got {p['warmup_epochs']}")
    if "e2e_methods" in p and "image_only" not in p["e2e_methods"]:
        raise ParameterError(f"parameter 'e2e_methods' of chapter {chapter} must include 'image_only' (the frozen "
                             f"heads' backbone), got {p['e2e_methods']}")
    if p.get("nproc", 1) > 1 and p.get("backend", "serial") != "serial":
        raise ParameterError(f"parameter 'nproc' of chapter {chapter} (processes per run) must be 1 unless backend "
                             f"is 'serial', got nproc {p['nproc']} with backend {p['backend']!r}")
    for name in ("seeds", "targets", "methods", "mine_seeds", "discrim_seeds", "ablation_seeds", "e2e_methods",
                 "interactions"):
        if name in p and len(set(map(str, p[name]))) != len(p[name]):
            raise ParameterError(f"parameter {name!r} of chapter {chapter} must not repeat an entry, "
                                 f"got {p[name]}")


def resolve(chapter: str, given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter of ``chapter`` plus ``profile``: ``given`` over the profile's values over the defaults, checked.

    ``defaults`` (default :data:`PARAMETER_DEFAULTS` of ``chapter``) name the chapter's parameters; raises
    :class:`ParameterError` naming the parameter, the bad value and what is allowed.
    """
    if defaults is None:
        if chapter not in PARAMETER_DEFAULTS:
            raise ParameterError(f"chapter must be one of {sorted(PARAMETER_DEFAULTS)}, got {chapter!r}")
        defaults = PARAMETER_DEFAULTS[chapter]
    unknown = [n for n in given if n not in defaults and n != "profile"]
    if unknown:
        raise ParameterError(f"chapter {chapter} has no parameter {unknown[0]!r}; its parameters are "
                             f"{sorted(defaults)}")
    profile = given.get("profile", "default")
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ParameterError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    values = {**defaults, **PROFILES[profile].get(chapter, {}), **given}
    resolved = {name: check_value(chapter, name, values[name], default) for name, default in defaults.items()}
    for name, value in resolved.items():  # after all type/range checks: these import the registries
        _check_names(chapter, name, value)
    _check_consistency(chapter, resolved)
    return {"profile": profile, **resolved}


#: The first line of the cell papermill injects after a notebook's parameters cell.
INJECTED_HEADER = "# Parameters"


def _assigned(source: str) -> list[str]:
    """The names a cell assigns at its top level, in order."""
    return [t.id for s in ast.parse(source).body if isinstance(s, (ast.Assign, ast.AnnAssign))
            for t in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(t, ast.Name)]


def given_names(history: list[str]) -> list[str]:
    """The names the parameters cell and papermill's injected cell assign, read from the kernel's input history
    (``In``) as the cell after them sees it."""
    cells = list(history[:-1])  # the last input is the calling cell
    names = []
    if cells and cells[-1].lstrip().startswith(INJECTED_HEADER + "\n"):
        names = _assigned(cells.pop())
    if not cells or "profile" not in _assigned(cells[-1]):
        raise ParameterError("run the notebook's parameters cell (the one that sets profile) right before this one")
    # papermill --inject-paths adds PAPERMILL_INPUT_PATH and the like: not chapter parameters
    return [n for n in dict.fromkeys(_assigned(cells[-1]) + names) if not n.startswith("PAPERMILL_")]


def resolve_notebook(chapter: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter, for the notebook's cell after its parameters: ``params = resolve_notebook(chapter, globals())``
    (the values come from the kernel's globals, the names from :func:`given_names`)."""
    return resolve(chapter, {n: namespace[n] for n in given_names(namespace["In"])})
