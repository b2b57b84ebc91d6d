"""Chapter parameters: the profile's values with the caller's over them, every value checked before anything trains.

``ctcbook run`` (before any kernel starts) and papermill run directly (:func:`resolve_notebook`, in the cell after
the parameters cell) both go through :func:`resolve`: the same values and the same :class:`ParameterError`. The checks
import nothing heavy, so ``ctcbook run -p epochs -1`` is refused before torch is imported.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import types
from typing import Any, Callable, Mapping

import yaml

from .profiles import PARAMETER_DEFAULTS, PROFILES


class ParameterError(ValueError):
    """A chapter parameter (or the profile) is unknown, of the wrong type, out of range or inconsistent."""


def parse_value(text: str) -> Any:
    """A command-line parameter value: YAML scalars and lists (``200``, ``0.05``, ``[0,1]``, ``null``, ``abc``)."""
    return yaml.safe_load(text)


# --- what each parameter may be ----------------------------------------------------------------------------
def _names(module: str, *registries: str) -> Callable[[], tuple[str, ...]]:
    """The keys of ``registries`` in ``module``, imported only when a name is checked."""
    return lambda: tuple(k for r in registries for k in getattr(importlib.import_module(module, __package__), r))


def _datasets() -> tuple[str, ...]:
    from ..data import available_datasets
    from ..data.stream import STREAMED

    return tuple(dict.fromkeys([*available_datasets(), *STREAMED]))


def _targets() -> tuple[str, ...]:
    from ..targets import TARGETS

    return tuple(sorted(TARGETS))


_POSITIVE = 1e-12  # "greater than zero" for learning rates and temperatures
_INF = float("inf")


@dataclasses.dataclass(frozen=True)
class Spec:
    """What one parameter may be: a ``kind`` ("int", "float", "bool", "str", "name": one of ``choices()``) or a list
    of them (``many``), within inclusive bounds (``high_open``: high excluded), None allowed if ``nullable``."""
    kind: str
    many: bool = False
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    nullable: bool = False
    choices: Callable[[], tuple[str, ...]] | None = None
    nonempty: bool = True

    def describe(self) -> str:
        """What is allowed, in words: "an integer >= 1", "a non-empty list of names from [...]"."""
        words = {"int": ("an integer", "integers"), "float": ("a number", "numbers"), "bool": ("true or false", ""),
                 "str": ("a string", "strings"), "name": ("one of", "names from")}[self.kind][self.many]
        if self.kind == "name":
            words += f" {list(self.choices())}"
        if self.low is not None and self.high is not None:
            words += f" in [{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            words += f" > 0" if self.low == _POSITIVE else f" >= {self.low:g}"
        if self.many:
            words = f"a {'non-empty ' if self.nonempty else ''}list of {words}"
        return words + (", or null" if self.nullable else "")

    def item(self, value: Any) -> Any:
        """One value (or list item) as this spec takes it; ValueError when it is not acceptable."""
        if self.kind in ("bool", "str", "name"):
            if not isinstance(value, bool if self.kind == "bool" else str):
                raise ValueError
            return value
        if isinstance(value, bool):
            raise ValueError
        if self.kind == "float" and isinstance(value, str):
            value = float(value)  # YAML 1.1 reads 5e-4 (no dot) as a string; accept what Python reads as a number
        if not isinstance(value, int if self.kind == "int" else (int, float)) or value != value or abs(value) == _INF:
            raise ValueError
        if self.low is not None and value < self.low or self.high is not None and (
                value >= self.high if self.high_open else value > self.high):
            raise ValueError
        return value


def _count(low=1, nullable=False) -> Spec:
    return Spec("int", low=low, nullable=nullable)


def _num(low=0.0, high=None, high_open=False) -> Spec:
    return Spec("float", low=low, high=high, high_open=high_open)


def _indices(nonempty=True) -> Spec:
    return Spec("int", many=True, low=0, nonempty=nonempty)


SPECS: dict[str, Spec] = {
    # the source run (chapters 1-5)
    "source": Spec("name", choices=_datasets),
    "source_classes": Spec("int", many=True, low=0, nullable=True),
    "train_size": _count(nullable=True),
    "arch": Spec("name", choices=_names("..models.resnet", "ARCHS")),
    "depth": _count(), "width": _count(), "stem_stride": _count(),
    "epochs": _count(), "batch_size": _count(),
    "augment": Spec("name", choices=_names("..config", "AUGMENTS")), "crop_padding": _count(0),
    "lr": _num(_POSITIVE), "weight_decay": _num(),
    "schedule": Spec("name", choices=lambda: ("cosine", "paper_cosine")), "lr_floor": _num(0, 1, True),
    "seeds": _indices(),
    "backbone_seed": _count(0),
    # how runs are trained (ctcbook.dispatch; ctcbook.launch for nproc > 1)
    "backend": Spec("name", choices=_names("..dispatch", "BACKENDS")), "workers": _count(nullable=True),
    "nproc": _count(),
    # probes (chapters 1, 2, 3, 5)
    "targets": Spec("name", many=True, choices=_targets),
    "target_train_size": _count(nullable=True), "target_test_size": _count(nullable=True),
    "probe_every": _count(), "test_every": _count(), "probe_workers": _count(),
    "paper_protocol": Spec("name", choices=_names("..probes", "PROTOCOLS"), nullable=True),
    "paper_protocol_seed": _count(0),
    # information estimators (chapters 2, 3)
    "info_every": _count(), "renyi_n": _count(2),
    "mine_seeds": _indices(), "mine_every": _count(), "mine_restarts": _count(),
    "mine_n": _count(2, nullable=True),
    "mine_preset": Spec("name", choices=_names("..chapters.ch2_information", "MINE_PRESETS")),
    "mine_splits": Spec("name", many=True, choices=lambda: ("source", *_targets()), nullable=True),
    # CTC (chapters 3, 5)
    "stage_two_epoch": _count(), "weight_decay_coef": _num(), "lr_restart": _num(),
    "alpha": _num(), "beta": _num(), "instance_t": _num(_POSITIVE), "instance_m": _num(0, 1, True),
    "nce_t": _num(_POSITIVE), "nce_m": _num(0, 1, True), "embed_dim": _count(), "nce_k": _count(),
    "refill": Spec("bool"), "train_instance_head": Spec("bool"),
    "discrim_alpha": _num(), "discrim_beta": _num(), "discrim_instance_t": _num(_POSITIVE),
    "discrim_nce_t": _num(_POSITIVE), "discrim_seeds": _indices(False),
    "ablation_seeds": _indices(False), "control_probe_every": _count(),
    # fusion heads, end-to-end fusion networks and simulated metadata (chapter 4)
    "methods": Spec("name", many=True, choices=_names("..models.fusion", "FUSION_METHODS", "EXTRA_METHODS")),
    "e2e_methods": Spec("name", many=True, choices=_names("..config", "E2E_METHODS")),
    "interactions": Spec("float", many=True, low=0, high=1), "test_size": _count(nullable=True),
    "heldout": _count(nullable=True), "warmup_epochs": _count(0), "mixup_alpha": _num(),
    "head_smoothing": Spec("name", choices=lambda: ("torch", "public")),
    "head_epochs": _count(), "head_batch_size": _count(), "head_lr": _num(_POSITIVE), "head_weight_decay": _num(),
    "label_smoothing": _num(0, 1, True), "meta_width": _count(), "reduced_dim": _count(), "hidden_dim": _count(),
    "num_blocks": _count(), "metadata_seed": _count(0), "location_spread": _num(_POSITIVE),
    "date_spread": _num(_POSITIVE), "background": _num(0, 1), "missing_fraction": _num(0, 1, True),
    "confusable": _indices(False), "tsne_points": _count(2),
    "explorer_days": Spec("int", many=True, low=1, high=366), "inat_root": Spec("str"),
}


def _bad(chapter: str, name: str, value: Any, spec: Spec, why: str = "") -> ParameterError:
    got = f"{value!r} (a string)" if isinstance(value, str) and spec.kind not in ("str", "name") else repr(value)
    return ParameterError(f"parameter {name!r} of chapter {chapter} must be {spec.describe()}, got {got}"
                          + (f": {why}" if why else ""))


def _check(chapter: str, name: str, value: Any, spec: Spec) -> Any:
    """Type and range of one parameter (names are checked after every value: that imports the registries)."""
    if value is None and spec.nullable:
        return value
    items = list(value) if spec.many and isinstance(value, tuple) else value
    if spec.many and (not isinstance(items, list) or spec.nonempty and not items):
        raise _bad(chapter, name, items, spec)
    try:
        return [spec.item(v) for v in items] if spec.many else spec.item(value)
    except ValueError:
        raise _bad(chapter, name, items, spec) from None


def _check_names(chapter: str, name: str, value: Any, spec: Spec) -> None:
    if spec.choices is None or value is None:
        return
    allowed = spec.choices()
    bad = [v for v in (value if spec.many else [value]) if v not in allowed
           and not (name == "targets" and v.startswith("folder:"))]  # a user's ImageFolder
    if bad:
        raise _bad(chapter, name, value, spec, f"unknown {bad[0]!r}" if spec.many else "")


def _check_consistency(chapter: str, p: dict[str, Any]) -> None:
    for name, why in (("stage_two_epoch", " so that stage 2 of CTC has epochs"), ("warmup_epochs", "")):
        if name in p and not p[name] < p["epochs"]:
            raise ParameterError(f"parameter {name!r} of chapter {chapter} must be below epochs ({p['epochs']})"
                                 f"{why}, got {p[name]}")
    if "test_every" in p and p["probe_every"] % p["test_every"]:  # source accuracy at every probed epoch
        raise ParameterError(f"parameter 'probe_every' of chapter {chapter} must be a multiple of test_every "
                             f"({p['test_every']}), got {p['probe_every']}")
    for name in ("mine_seeds", "discrim_seeds", "ablation_seeds"):  # compared with the same seeds' baseline
        if name in p and not set(p[name]) <= set(p["seeds"]):
            raise ParameterError(f"parameter {name!r} of chapter {chapter} must be a subset of seeds "
                                 f"{p['seeds']}, got {p[name]}")
    if p.get("mine_splits") is not None and not set(p["mine_splits"]) <= {"source", *p.get("targets", [])}:
        raise ParameterError(f"parameter 'mine_splits' of chapter {chapter} must be None or a subset of "
                             f"['source', *targets] = {['source', *p.get('targets', [])]}, got {p['mine_splits']}")
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


def resolve(chapter: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of ``chapter`` plus ``profile``: ``given`` over the profile's values over the defaults, checked."""
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
    resolved = {name: _check(chapter, name, values[name], SPECS[name]) for name in defaults}
    for name, value in resolved.items():
        _check_names(chapter, name, value, SPECS[name])
    _check_consistency(chapter, resolved)
    return {"profile": profile, **resolved}


def _assigned(source: str) -> list[str]:
    """The names a cell assigns at its top level, in order."""
    return [t.id for s in ast.parse(source).body if isinstance(s, (ast.Assign, ast.AnnAssign))
            for t in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(t, ast.Name)]


_KERNEL_NAMES = {"In", "Out", "exit", "quit", "open", "get_ipython"}


def given_names(namespace: Mapping[str, Any]) -> list[str]:
    """The names the parameters cell and papermill's injected cell assign, from the kernel's input history ``In``;
    without one (nbval runs a fresh kernel top-down) the kernel's public data globals."""
    cells = list(namespace.get("In") or [])[:-1]  # the last input is the calling cell
    if not cells:
        names = [n for n, v in namespace.items() if not n.startswith("_") and n not in _KERNEL_NAMES
                 and not callable(v) and not isinstance(v, types.ModuleType)]
    else:
        names = []
        if cells[-1].lstrip().startswith("# Parameters\n"):  # papermill's injected cell
            names = _assigned(cells.pop())
        if not cells or "profile" not in _assigned(cells[-1]):
            raise ParameterError("run the notebook's parameters cell (the one that sets profile) right before this one")
        names = _assigned(cells[-1]) + names
    # papermill --inject-paths adds PAPERMILL_INPUT_PATH and the like: not chapter parameters
    return [n for n in dict.fromkeys(names) if not n.startswith("PAPERMILL_")]


def resolve_notebook(chapter: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter, for the cell after the parameters cell: ``params = resolve_notebook(chapter, globals())``."""
    return resolve(chapter, {n: namespace[n] for n in given_names(namespace)})
