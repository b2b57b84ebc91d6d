"""Chapter 4's experiment: every fusion head trained on a frozen backbone's features plus encoded metadata, per seed
(the Bayes reference, per-class accuracy, t-SNE maps), and the sweep over the image-metadata interaction level:
end-to-end fusion networks per (level, seed, method), frozen heads on the (level, seed) ``image_only`` network's
features of ``heldout`` images it never trained on. Results, weights and maps are cached in the runs' folders.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..config import FusionTrainConfig, check_fields, is_int
from ..data.metadata import MetadataArrays, MetadataSimulator, bayes_posterior
from ..dispatch import dispatch
from ..fusion_train import (fusion_splits, heldout_split, load_fusion_net, smoothed_targets,
                            soft_cross_entropy)
from ..models.dynamic_mlp import encode_metadata
from ..models.fusion import EXTRA_METHODS, FUSION_METHODS, GeoPriorHead, build_head
from ..results import findings
from ..runs import Run, RunStore, append_jsonl, atomic_torch_save, config_hash, read_jsonl
from .. import stats

#: Bump when feature extraction or head training changes its numbers; part of every cache key.
FUSION_VERSION = 1
#: Methods trained directly; ``geo_prior`` is combined from two of them.
TRAINED_METHODS = tuple(m for m in FUSION_METHODS + EXTRA_METHODS if m != "geo_prior")
ALL_METHODS = FUSION_METHODS + EXTRA_METHODS


# --- settings ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HeadSettings:
    """How every head is built and trained (AdamW, cosine per step), the same for all methods; ``smoothing``: "torch"
    (eps / K to every class) or "public" (the public code's: 1 - eps on the true class, eps / (K - 1) on the others)."""

    meta_width: int = 64
    embed_dim: int = 64
    reduced_dim: int = 64
    hidden_dim: int = 16
    num_blocks: int = 2
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    smoothing: str = "torch"

    def __post_init__(self):
        ints = ("meta_width", "embed_dim", "reduced_dim", "hidden_dim", "num_blocks", "epochs", "batch_size")
        check_fields(self, [
            ("smoothing", self.smoothing in ("torch", "public"), "'torch' or 'public'"),
            *((name, is_int(getattr(self, name), 1), "an integer >= 1") for name in ints),
            ("lr", isinstance(self.lr, (int, float)) and self.lr > 0, "a number > 0"),
            ("weight_decay", isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "a number >= 0"),
            ("label_smoothing", isinstance(self.label_smoothing, (int, float)) and 0 <= self.label_smoothing < 1,
             "a number in [0, 1)")])

    def cache_key(self) -> dict[str, Any]:
        """The fields, without ``smoothing`` at "torch", so results cached before that field existed keep their key."""
        return {k: v for k, v in asdict(self).items() if (k, v) != ("smoothing", "torch")}


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class FusionData:
    """One backbone's frozen features (standardised on the train split), metadata and labels; ``key``: its cache key."""

    train_x: torch.Tensor
    train_m: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_m: torch.Tensor
    test_y: torch.Tensor
    train_meta: MetadataArrays
    test_meta: MetadataArrays
    class_names: tuple[str, ...]
    simulator: MetadataSimulator
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_dim(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def fusion_data_from_e2e(run: Run, device: torch.device | str = "cpu", batch_size: int = 1024, *,
                         heldout: int | None = None) -> FusionData:
    """An end-to-end run's frozen features, cached; ``heldout`` n: of n train-split images it never trained on."""
    config = FusionTrainConfig.from_dict({**run.config, "weights": None})
    if config.dataset != "simulated":
        raise ValueError(f"fusion_data_from_e2e needs a run on simulated metadata, got dataset {config.dataset!r}")
    train, test, classes = fusion_splits(config)
    if heldout is not None:
        train, _ = heldout_split(config, heldout)
    epoch = run.saved_epochs()[-1]
    spec = {"epoch": epoch, "version": FUSION_VERSION, **({"heldout": heldout} if heldout is not None else {})}
    path = run.eval_path("features", spec).with_suffix(".pt")
    if path.exists():
        feats = torch.load(path, map_location="cpu", weights_only=True)
    else:
        model = load_fusion_net(run, epoch, device)
        with torch.no_grad():
            feats = {name: torch.cat([model.backbone.features(split.images[i:i + batch_size].float().div(255)
                                                              .to(device)).cpu()
                                      for i in range(0, len(split), batch_size)])
                     for name, split in (("train_x", train), ("test_x", test))}
        atomic_torch_save(feats, path)
    mean, std = feats["train_x"].mean(0), feats["train_x"].std(0).clamp_min(1e-6)
    return FusionData((feats["train_x"] - mean) / std, train.meta, train.labels, (feats["test_x"] - mean) / std,
                      test.meta, test.labels, train.raw, test.raw, tuple(classes),
                      config.simulator(len(classes), classes), {"run": run.name, **spec})


# --- training one head ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def one_thread():
    """Run the block on one torch and one OpenMP/BLAS thread: the heads' matrices are too small for threads to pay
    (on a shared 2-core CPU a head took 25-67 s threaded, 3-6 s on one)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)


def _check_method(method: str, allowed: Sequence[str] = ALL_METHODS) -> None:
    if method not in allowed:
        raise ValueError(f"method must be one of {tuple(allowed)}, got {method!r}")


def train_head(method: str, x: torch.Tensor, m: torch.Tensor, y: torch.Tensor, num_classes: int,
               settings: HeadSettings = HeadSettings(), *, seed: int = 0) -> tuple[nn.Module, list[float]]:
    """Train one head of ``method`` on features, metadata and labels: (head in eval mode, mean loss per epoch)."""
    _check_method(method, TRAINED_METHODS)
    if x.ndim != 2 or m.ndim != 2 or y.ndim != 1 or not (len(x) == len(m) == len(y)) or len(y) == 0:
        raise ValueError(f"x (N, C), m (N, cin) and y (N,) must be non-empty with one N, got {tuple(x.shape)}, "
                         f"{tuple(m.shape)}, {tuple(y.shape)}")
    with one_thread() if x.device.type == "cpu" else contextlib.nullcontext():   # one thread: see one_thread
        torch.manual_seed(seed)
        head = build_head(method, x.shape[1], num_classes, m.shape[1], asdict(settings))
        n, bs = len(y), min(settings.batch_size, len(y))
        steps = settings.epochs * math.ceil(n / bs)
        opt = torch.optim.AdamW(head.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
        gen = torch.Generator().manual_seed(seed)
        losses = []
        head.train()
        for _ in range(settings.epochs):
            order, total = torch.randperm(n, generator=gen), 0.0
            for i in range(0, n, bs):
                idx = order[i:i + bs]
                if settings.smoothing == "torch":
                    loss = F.cross_entropy(head(x[idx], m[idx]), y[idx], label_smoothing=settings.label_smoothing)
                else:
                    loss = soft_cross_entropy(head(x[idx], m[idx]),
                                              smoothed_targets(y[idx], num_classes, settings.label_smoothing))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            losses.append(total / n)
            if not math.isfinite(losses[-1]):
                raise FloatingPointError(f"{method} head, seed {seed}: training loss became {losses[-1]}")
        return head.eval(), losses


@torch.no_grad()
def predict(head: nn.Module, x: torch.Tensor, m: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Class probabilities (N, K) of ``head`` (eval mode) on x (N, C), m (N, cin) (one thread on the CPU)."""
    head.eval()
    with one_thread():
        return torch.cat([torch.softmax(head(x[i:i + batch_size], m[i:i + batch_size]), 1)
                          for i in range(0, len(x), batch_size)])


# --- every method, every seed, cached -----------------------------------------------------------------------------
class FusionExperiment:
    """All heads of one backbone run: ``results`` trains what is missing, ``head`` loads one."""

    def __init__(self, run: Run, data: FusionData, settings: HeadSettings = HeadSettings()):
        self.run, self.data, self.settings = run, data, settings
        spec = {"data": data.key, "head": settings.cache_key(), "version": FUSION_VERSION}
        self.results_path = run.eval_path("fusion", spec)
        self.weights_dir = self.results_path.with_suffix("")

    def _weights(self, method: str, seed: int) -> Path:
        return self.weights_dir / f"{method}-s{seed}.pt"

    def _cached(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {(r["method"], r["seed"]): r for r in read_jsonl(self.results_path)}

    def head(self, method: str, seed: int) -> nn.Module:
        """A trained head in eval mode (raises FileNotFoundError if it was not trained yet)."""
        _check_method(method)
        if method == "geo_prior":
            return GeoPriorHead(self.head("image_only", seed), self.head("metadata_only", seed)).eval()
        path = self._weights(method, seed)
        if not path.exists() or (method, seed) not in self._cached():
            raise FileNotFoundError(f"no trained {method} head for seed {seed} in {self.weights_dir}; "
                                    "call results() first")
        head = build_head(method, self.data.feature_dim, self.data.num_classes, self.data.train_m.shape[1],
                          asdict(self.settings))
        head.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return head.eval()

    def _row(self, method: str, seed: int, head: nn.Module, seconds: float = 0.0,
             final_loss: float = float("nan")) -> dict[str, Any]:
        right = predict(head, self.data.test_x, self.data.test_m).argmax(1) == self.data.test_y
        return {"method": method, "seed": seed, "test_acc": float(right.float().mean()), "train_seconds": seconds,
                "final_loss": final_loss, "n_params": sum(p.numel() for p in head.parameters())}

    def missing(self, methods: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
        """The (method, seed) heads :meth:`results` would train (the geo prior needs its two classifiers)."""
        need = [m for m in TRAINED_METHODS if m in methods
                or (m in ("image_only", "metadata_only") and "geo_prior" in methods)]
        cached = self._cached()
        return [(m, s) for s in seeds for m in need if (m, s) not in cached or not self._weights(m, s).exists()]

    def results(self, methods: Sequence[str] = FUSION_METHODS, seeds: Sequence[int] = (0, 1, 2), *,
                progress: bool = True) -> pd.DataFrame:
        methods, seeds = list(methods), list(seeds)
        if not methods or not seeds:
            raise ValueError(f"methods and seeds must be non-empty, got {methods!r} and {seeds!r}")
        for method in methods:
            _check_method(method)
        if not all(is_int(s, 0) for s in seeds):
            raise ValueError(f"seeds must be non-negative integers, got {seeds!r}")
        todo = self.missing(methods, seeds)
        d = self.data
        for method, seed in tqdm(todo, desc="fusion heads", disable=not progress or not todo, unit="head"):
            t0 = time.perf_counter()
            head, losses = train_head(method, d.train_x, d.train_m, d.train_y, d.num_classes, self.settings,
                                      seed=seed)
            seconds = time.perf_counter() - t0
            atomic_torch_save(head.state_dict(), self._weights(method, seed))
            append_jsonl(self.results_path, self._row(method, seed, head, seconds, losses[-1]),
                         unique=("method", "seed"))
        cached = self._cached()
        return pd.DataFrame([self._row(m, s, self.head(m, s)) if m == "geo_prior" else cached[(m, s)]
                             for s in seeds for m in methods])


def bayes_ceiling(exp: FusionExperiment, seeds: Sequence[int], image_method: str = "image_only") -> pd.DataFrame:
    """Top-1 (%) per seed of p(y | x) p(m | y) / p(y): the ``image_method`` head's softmax times the simulator's exact
    metadata likelihood. Bayes-optimal only at interaction 0 and for a calibrated head; beyond it, the best
    *additive* combination, which the paper says a nonlinear fusion can beat."""
    d = exp.data
    log_lik = d.simulator.log_likelihood(d.test_meta)
    prior = torch.bincount(d.train_y, minlength=d.num_classes).double().numpy()
    rows = []
    for seed in seeds:
        p_img = predict(exp.head(image_method, seed), d.test_x, d.test_m).double().numpy()
        post = bayes_posterior(p_img, log_lik, prior / prior.sum())
        rows.append({"seed": seed, "test_acc": float((post.argmax(1) == d.test_y.numpy()).mean() * 100)})
    return pd.DataFrame(rows)


# --- views for the chapter ------------------------------------------------------------------------------------------
def tsne_points(exp: FusionExperiment, method: str, classes: Sequence[int], *, n: int = 1000, seed: int = 0,
                perplexity: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """2-D t-SNE of the features a head's classifier reads for about n / len(classes) test images of each of
    ``classes`` (drawn with ``seed``): (coords, labels), cached beside the head's weights."""
    from sklearn.manifold import TSNE

    d = exp.data
    if not classes or any(not 0 <= k < d.num_classes for k in classes):
        raise ValueError(f"classes must be a non-empty list of class indices in 0..{d.num_classes - 1}, "
                         f"got {list(classes)!r}")
    if not is_int(n, len(classes) * 2):
        raise ValueError(f"n must be an integer >= 2 per class ({2 * len(classes)}), got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    picked = [(d.test_y == k).nonzero().flatten() for k in classes]
    idx = torch.cat([i[torch.randperm(len(i), generator=gen)[:n // len(classes)]] for i in picked]).sort().values
    spec = {"method": method, "classes": list(classes), "n": n, "seed": seed, "perplexity": perplexity}
    path = exp.weights_dir / f"tsne-{config_hash(spec)}.pt"
    if path.exists():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        return cached["coords"].numpy(), cached["labels"].numpy()
    with torch.no_grad():
        feats = exp.head(method, seed).forward_features(d.test_x[idx], d.test_m[idx]).numpy()
    with one_thread():
        coords = TSNE(2, perplexity=min(perplexity, (len(idx) - 1) / 3), init="pca",
                      random_state=seed).fit_transform(feats)
    labels = d.test_y[idx]
    atomic_torch_save({"coords": torch.as_tensor(coords), "labels": labels}, path)
    return coords, labels.numpy()


@torch.no_grad()
def probabilities_at(head: nn.Module, x: torch.Tensor, lat: Sequence[float], lon: Sequence[float],
                     day: Sequence[float]) -> torch.Tensor:
    """Class probabilities (P, K) of one image's features x (C,) placed at P (lat, lon, day of a 365-day year)."""
    if x.ndim != 1:
        raise ValueError(f"x must be one image's features (C,), got shape {tuple(x.shape)}")
    if not (len(lat) == len(lon) == len(day)) or len(lat) == 0:
        raise ValueError(f"lat, lon and day must be non-empty and of one length, got {len(lat)}, {len(lon)}, "
                         f"{len(day)}")
    m = encode_metadata(np.asarray(lat, float), np.asarray(lon, float), np.asarray(day, float))
    return predict(head, x.unsqueeze(0).expand(len(m), -1).contiguous(), m)


def pick_example(exp: FusionExperiment, seed: int, true_class: int, confused_with: int) -> int:
    """A test image of ``true_class`` that image only most nearly confuses with ``confused_with``, for the explorer."""
    d = exp.data
    p = predict(exp.head("image_only", seed), d.test_x, d.test_m)
    idx = (d.test_y == true_class).nonzero().flatten()
    if len(idx) == 0:
        raise ValueError(f"no test image of class {true_class}")
    gap = (p[idx, true_class] - p[idx, confused_with]).abs()
    top2 = p[idx].topk(2, dim=1).indices
    ok = (top2 == confused_with).any(1) & (top2 == true_class).any(1)
    if ok.any():
        return int(idx[ok][gap[ok].argmin()])
    return int(idx[p[idx, confused_with].argmax()])


# --- what the chapter reports -------------------------------------------------------------------------------------
#: The public code's README (github ylingfeng/DynamicMLP, "Model Zoo"): iNat21 mini, 224 px, 90 epochs, top-1 (%).
PAPER_INAT21_MINI = (("ResNet-50", 67.924, 78.751), ("SK-Res2Net-101", 76.102, 84.694))

#: The training modes, the Bayes reference's name and every method's label in tables and figures.
MODES = ("frozen", "end to end")
BAYES = "bayes_reference"
LABELS = {"image_only": "image only", "metadata_only": "metadata only", "concat": "concatenation",
          "add": "addition", "multiply": "multiplication", "geo_prior": "geo prior (product)",
          "dynamic_mlp_a": "Dynamic MLP-A", "dynamic_mlp_b": "Dynamic MLP-B", "dynamic_mlp_c": "Dynamic MLP-C",
          "mlp_concat": "MLP on [x; e] (parameter-matched)", "image_mlp": "image only, MLP (parameter-matched)",
          BAYES: "Bayes reference: image-only head x exact p(m | y)"}


def _per_seed(results: pd.DataFrame, method: str) -> dict[int, float]:
    """seed -> test top-1 (%) of ``method``."""
    rows = results[results.method == method]
    return {int(seed): float(acc) * 100 for seed, acc in zip(rows.seed, rows.test_acc)}


def _ci(iv: stats.Interval, decimals: int = 2) -> str:
    """:func:`ctcbook.stats.brackets` (the bounds the verdicts decide on), empty for one seed."""
    return "" if iv.n < 2 else stats.brackets(iv, decimals)


def summary_table(results: pd.DataFrame, labels: dict[str, str] = LABELS) -> pd.DataFrame:
    """Per method: seeds, mean top-1 (%) and 95% interval, gain over image only (paired by seed), parameters."""
    if results.empty:
        raise ValueError("results is empty")
    image = _per_seed(results, "image_only") if "image_only" in set(results.method) else None
    rows = []
    for method in [m for m in ALL_METHODS if m in set(results.method)]:
        accs = _per_seed(results, method)
        top1 = stats.t_interval(accs)
        row = {"method": labels.get(method, method), "seeds": top1.n, "top-1 (%)": round(top1.mean, 2),
               "95% CI (%)": _ci(top1)}
        if image is not None:
            gain = stats.paired_interval(accs, image)
            row["gain over image only (points)"] = round(gain.mean, 2)
            row["95% CI of the gain (points)"] = "" if method == "image_only" else _ci(gain)
        row["head parameters"] = int(results[results.method == method].n_params.iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


# --- the interaction sweep: end-to-end networks, frozen heads on held-out features, per (level, seed) ------------
#: The backbone of the frozen heads at each level and seed.
BACKBONE_METHOD = "image_only"

Key = tuple[float, int, str]


def sweep_configs(base: FusionTrainConfig, levels: Sequence[float], seeds: Sequence[int],
                  methods: Sequence[str]) -> dict[Key, FusionTrainConfig]:
    """{(level, seed, method): ``base`` with that method and seed, metadata interaction = level, draw_seed = seed}."""
    if not levels or not seeds or not methods:
        raise ValueError(f"levels, seeds and methods must be non-empty, got {list(levels)!r}, {list(seeds)!r}, "
                         f"{list(methods)!r}")
    if BACKBONE_METHOD not in methods:
        raise ValueError(f"e2e_methods must include {BACKBONE_METHOD!r} (the frozen heads' backbone), got "
                         f"{list(methods)!r}")
    return {(float(a), int(s), m): base.replace(method=m, seed=int(s),
                                                metadata={**base.metadata, "interaction": float(a),
                                                          "draw_seed": int(s)})
            for a in levels for s in seeds for m in methods}


def train_sweep(configs: dict[Key, FusionTrainConfig], *, backend: str = "serial", workers: int | None = None,
                store: RunStore | None = None, device: torch.device | str | None = None) -> dict[Key, Run]:
    """{key: finished run}, training what is missing through :func:`ctcbook.dispatch.dispatch`."""
    runs = dispatch(list(configs.values()), backend=backend, workers=workers, store=store, device=device)
    return dict(zip(configs, runs))


def e2e_results(runs: dict[Key, Run]) -> pd.DataFrame:
    """One row per end-to-end run: mode, level, seed, method, test_acc (last epoch), train_seconds (all epochs)."""
    rows = []
    for (a, s, m), run in runs.items():
        metrics = run.metrics()
        rows.append({"mode": "end to end", "level": a, "seed": s, "method": m, "test_acc": metrics[-1]["test_acc"],
                     "train_seconds": float(sum(r["train_seconds"] for r in metrics))})
    return pd.DataFrame(rows)


def frozen_experiments(runs: dict[Key, Run], settings: HeadSettings, heldout: int | None,
                       device: torch.device | str = "cpu") -> dict[tuple[float, int], FusionExperiment]:
    """{(level, seed): the heads' experiment on the frozen features of that level and seed's image-only run}."""
    return {(a, s): FusionExperiment(run, fusion_data_from_e2e(run, device, heldout=heldout), settings)
            for (a, s, m), run in runs.items() if m == BACKBONE_METHOD}


def frozen_results(exps: dict[tuple[float, int], FusionExperiment], methods: Sequence[str], *,
                   progress: bool = True) -> pd.DataFrame:
    """One row per head of ``methods`` (head seed = the level's seed) and Bayes reference, at every (level, seed)."""
    frames = []
    todo = any(exp.missing(methods, [s]) for (a, s), exp in exps.items())   # no bar when everything is cached
    for (a, s), exp in tqdm(exps.items(), desc="frozen heads per (level, seed)", disable=not progress or not todo,
                            unit="backbone"):
        r = exp.results(methods, [s], progress=False)
        image = "image_mlp" if "image_mlp" in methods else "image_only" if "image_only" in methods else None
        if image is not None:
            bayes = bayes_ceiling(exp, [s], image)
            r = pd.concat([r, pd.DataFrame({"method": BAYES, "seed": s, "test_acc": bayes.test_acc / 100,
                                            "train_seconds": 0.0, "n_params": 0})], ignore_index=True)
        frames.append(r.assign(mode="frozen", level=a))
    return pd.concat(frames, ignore_index=True)


def _accs(results: pd.DataFrame, mode: str, level: float, method: str) -> dict[int, float]:
    """seed -> top-1 (%) of one cell."""
    return _per_seed(results[(results["mode"] == mode) & (results.level == level)], method)


def _mean(results: pd.DataFrame, mode: str, level: float, method: str) -> float:
    """Seed-mean top-1 (%) of one cell."""
    return np.mean(list(_accs(results, mode, level, method).values()))


def sweep_table(results: pd.DataFrame, labels: dict[str, str] = LABELS) -> pd.DataFrame:
    """Top-1 (%) per (mode, method) row and interaction level column: "mean ± std (n)" over seeds (std ddof 1)."""
    levels = sorted(results.level.unique())
    rows = []
    for mode in [m for m in MODES if m in set(results["mode"])]:
        sub = results[results["mode"] == mode]
        order = [m for m in (*ALL_METHODS, BAYES) if m in set(sub.method)]
        for method in order:
            row = {"training": mode, "method": labels.get(method, method)}
            for a in levels:
                v = np.array(list(_accs(results, mode, a, method).values()))
                row[f"a = {a:g}"] = ("" if len(v) == 0 else f"{v.mean():.2f} ± {v.std(ddof=1):.2f}" if len(v) > 1
                                     else f"{v.mean():.2f}")
            rows.append(row)
    return pd.DataFrame(rows)


def gains(results: pd.DataFrame, mode: str, method: str, over: str) -> pd.DataFrame:
    """Per level: ``method`` minus ``over`` (points, paired by seed), its mean, 95% t interval (low, high) and n."""
    rows = []
    for a in sorted(results.level.unique()):
        a_m, a_o = _accs(results, mode, a, method), _accs(results, mode, a, over)
        if a_m and a_o:
            iv = stats.paired_interval(a_m, a_o)
            rows.append({"level": a, "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(rows)


def findings_markdown(results: pd.DataFrame) -> str:
    """The findings from the per-seed ``results``, each comparison paired by seed and judged on its interval."""
    levels = sorted(results.level.unique())
    lo, hi = levels[0], levels[-1]
    have = {mode: set(results[results["mode"] == mode].method) for mode in MODES}
    if not {"image_only", "dynamic_mlp_c"} <= have["frozen"]:
        raise ValueError("results need frozen image_only and dynamic_mlp_c rows")
    modes = [mode for mode in MODES if have[mode]]
    simple = [m for m in ("concat", "add", "multiply", "geo_prior") if m in have["frozen"]]
    items = []

    def acc(mode, a, method="dynamic_mlp_c"):
        return _accs(results, mode, a, method)

    def verdict(x, y, quantity, pos="Dynamic MLP-C is better", neg="Dynamic MLP-C is worse"):
        return stats.verdict(stats.paired_interval(x, y), quantity=quantity, positive=pos, negative=neg).text

    if simple:
        best = max(simple, key=lambda m: _mean(results, "frozen", lo, m))
        items.append(f"At interaction {lo:g} (frozen heads): "
                     + verdict(acc("frozen", lo), acc("frozen", lo, best),
                               f"Dynamic MLP-C minus the best simple fusion ({LABELS[best]})") + ".")
    for mode in modes:
        if {"mlp_concat", "dynamic_mlp_c"} <= have[mode]:
            items.append(f"Against the MLP on [x; e] with as many parameters ({mode}): "
                         + "; ".join(f"at interaction {a:g}, "
                                     + verdict(acc(mode, a), acc(mode, a, "mlp_concat"),
                                               "Dynamic MLP-C minus the parameter-matched MLP")
                                     for a in sorted({lo, hi})) + ".")
    if BAYES in have["frozen"]:
        head = "image-only MLP head" if "image_mlp" in have["frozen"] else "linear image-only head"
        items.append(f"At interaction {lo:g}, the Bayes reference ({head} x exact metadata likelihood) "
                     f"reaches {_mean(results, 'frozen', lo, BAYES):.2f}% and Dynamic MLP-C "
                     f"{_mean(results, 'frozen', lo, 'dynamic_mlp_c'):.2f}%: "
                     + verdict(acc("frozen", lo), acc("frozen", lo, BAYES), "Dynamic MLP-C minus the Bayes reference",
                               "Dynamic MLP-C is above it", "Dynamic MLP-C is below it") + ".")
    for mode in modes:
        if {"concat", "dynamic_mlp_c"} <= have[mode]:
            items.append(f"At interaction {hi:g} ({mode}): "
                         + verdict(acc(mode, hi), acc(mode, hi, "concat"), "Dynamic MLP-C minus concatenation") + ".")
            lead = {a: {s: v - acc(mode, a, "concat")[s] for s, v in acc(mode, a).items()} for a in (lo, hi)}
            items.append(f"Does Dynamic MLP-C's lead over concatenation grow with the interaction ({mode})? "
                         + verdict(lead[hi], lead[lo], f"its lead at {hi:g} minus its lead at {lo:g}", "it grows",
                                   "it shrinks") + ".")
    if "dynamic_mlp_c" in have["end to end"]:
        items.append(f"End to end against frozen heads, Dynamic MLP-C at interaction {hi:g}: "
                     + verdict(acc("end to end", hi), acc("frozen", hi), "end to end minus frozen",
                               "end to end is better", "end to end is worse") + ".")
    return findings(items)


def per_class_sentence(per_class: pd.DataFrame, confusable: Sequence[str], method: str = "dynamic_mlp_c") -> str:
    """The three classes that gain most over image only, and the confusable classes' mean gain against the rest."""
    g = (per_class[method] - per_class["image_only"]).sort_values(ascending=False)   # points, largest first
    top = ", ".join(f"{name} ({v:+.1f})" for name, v in g.head(3).items())
    conf = [c for c in g.index if c in set(confusable)]
    rest = [c for c in g.index if c not in set(confusable)]
    words = (f"The largest per-class gains of {LABELS.get(method, method)} over image only are {top} points.")
    if conf and rest:
        c, r = g[conf].mean(), g[rest].mean()
        words += (f" The confusable classes ({', '.join(conf)}) gain {c:+.1f} points on average, the others "
                  f"{r:+.1f}: the confusable classes gain {'more' if c > r else 'less'} than the rest.")
    return words


def per_class(exps: dict[tuple[float, int], FusionExperiment], level: float, methods: Sequence[str]
              ) -> pd.DataFrame:
    """Test top-1 (%) per class (rows) and method (columns) at ``level``, the mean over the level's seeds."""
    frames = []
    for (a, seed), exp in exps.items():
        if a != level:
            continue
        d = exp.data
        images = torch.bincount(d.test_y, minlength=d.num_classes).float()
        cols = {}
        for method in methods:
            right = d.test_y[predict(exp.head(method, seed), d.test_x, d.test_m).argmax(1) == d.test_y]
            rate = torch.bincount(right, minlength=d.num_classes).float() / images   # as a float32 mean per class
            cols[method] = rate.double().numpy() * 100
        frames.append(pd.DataFrame(cols, index=list(d.class_names)))
    if not frames:
        raise ValueError(f"no frozen experiment at interaction level {level!r}")
    return sum(frames[1:], frames[0]) / len(frames)


def paper_rows(results: pd.DataFrame) -> pd.DataFrame:
    """The public code's iNat21-mini numbers beside ours (image only and Dynamic MLP-C per level, seed means)."""
    rows = [{"setting": f"paper: iNat21 mini, {net}, end to end, 90 epochs", "image only (%)": a,
             "Dynamic MLP-C (%)": b, "gain (points)": round(b - a, 3)} for net, a, b in PAPER_INAT21_MINI]
    mode = "end to end" if "end to end" in set(results["mode"]) else "frozen"
    for a in sorted(results.level.unique()):
        img, c = _mean(results, mode, a, "image_only"), _mean(results, mode, a, "dynamic_mlp_c")
        rows.append({"setting": f"ours: Fashion-MNIST + simulated metadata, interaction {a:g}, {mode}",
                     "image only (%)": round(img, 2), "Dynamic MLP-C (%)": round(c, 2),
                     "gain (points)": round(c - img, 2)})
    return pd.DataFrame(rows)
