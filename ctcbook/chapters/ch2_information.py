"""The information plane of saved runs: I(X;T) and I(T;Y) at each probed checkpoint, cached with the run.

X is the network's input as it sees it (pixels after its per-channel normalisation, flattened), T a layer's
activations (flattened), Y the labels; all from a fixed, stratified probe set of a test split: the source's test
split (``"source"``) or a transfer target's (its key in :data:`ctcbook.chapters.ch1_tradeoff.TARGETS`). Two estimators of
:mod:`ctcbook.estimators`, every value in **bits**:

* ``"renyi"``: matrix-based Renyi alpha-entropy on ``n`` probe images, Gaussian kernels with the width rule of
  :func:`ctcbook.estimators.kernel_width` (computed per layer and epoch, so a layer whose activations only grow in scale
  keeps the same value), a delta kernel for Y. Cheap enough for every stage of the network.
* ``"mine"``: MINE (Donsker-Varadhan bound with the moving-average bias correction) as the paper's ``mine.py``, on
  the penultimate layer only; X and T as the paper feeds them (normalised pixels, raw features), Y one-hot.
  :data:`CPU_MINE_XT` / :data:`CPU_MINE_TY` are the settings the ``default`` profile can afford on a 2-core CPU;
  :data:`ctcbook.estimators.PAPER_MINE_XT` / ``PAPER_MINE_TY`` the paper's.

Each (run, split, estimator settings) has its own JSON-lines cache in the run folder (``evals/``), one row per
(epoch, layer), appended as soon as it is computed: a re-execution recomputes nothing and an interrupted pass
resumes.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..data import ImageSet, subsample
from ..estimators import (MineSettings, PAPER_MINE_TY, PAPER_MINE_XT, gaussian_gram, kernel_width, label_gram, mine,
                   one_hot, renyi_entropy)
from ..models import CifarResNet, Classifier
from ..runs import Run, append_jsonl, read_jsonl
from .ch1_tradeoff import TARGETS, probe_epochs, run_target
from ..train import default_device, load_model, source_data
from ..config import TrainConfig

#: Bump when this module changes its numbers; part of every cached estimate's key.
INFO_VERSION = 1
ESTIMATORS = ("renyi", "mine")
PENULTIMATE = "penultimate"

#: MINE shrunk for a 2-core CPU (the ``default`` profile): the paper's statistics network keeps its depth (3 hidden
#: ReLU layers) but has 64 units instead of 1024, and runs 500 steps on batches of 256 drawn from up to 2,000 probe
#: images instead of 1e4 (I(X;T)) / 2e4 (I(T;Y)) steps on batches of 5,000, with a larger learning rate (1e-3 instead
#: of 8e-5 / 1e-5) so that so few steps move at all, and a 100-step smoothing window instead of 500. The
#: known-answer tests (tests/test_info.py) show settings of this size recover the mutual information of correlated
#: Gaussians.
CPU_MINE_XT = MineSettings(hidden=64, layers=3, lr=1e-3, iterations=500, batch_size=256, smoothing=100)
CPU_MINE_TY = MineSettings(hidden=64, layers=3, lr=1e-3, iterations=500, batch_size=256, smoothing=100)
#: Named MINE settings: ``"cpu"`` for the embedded default, ``"paper"`` for GPU profiles.
#: ``"smoke"``: a few steps of a tiny network, only to exercise the code path in CI (its values mean nothing).
SMOKE_MINE = MineSettings(hidden=16, layers=2, lr=1e-3, iterations=30, batch_size=64, smoothing=10)
MINE_PRESETS: dict[str, tuple[MineSettings, MineSettings]] = {"cpu": (CPU_MINE_XT, CPU_MINE_TY),
                                                              "paper": (PAPER_MINE_XT, PAPER_MINE_TY),
                                                              "smoke": (SMOKE_MINE, SMOKE_MINE)}


def splits_allowed() -> tuple[str, ...]:
    return ("source", *TARGETS)


def _check_split(split: str) -> None:
    if split not in splits_allowed():
        raise ValueError(f"split must be one of {splits_allowed()}, got {split!r}")


def probe_set(run: Run, split: str, n: int | None) -> ImageSet:
    """The images X and labels Y of ``split`` the estimates use: a stratified subset of ``n`` test images (seed 0;
    None keeps all), in the run's input format. ``"source"`` is the run's own test split (its classes only)."""
    _check_split(split)
    if split == "source":
        return subsample(source_data(TrainConfig.from_dict(run.config))[1], n, seed=0)
    return run_target(run, split, None, n)[1]


def stage_modules(model: Classifier) -> dict[str, nn.Module]:
    """The modules whose outputs are the earlier layers analysed: the last block of each stage of a CIFAR-style
    ResNet (``stage1`` .. ``stage3``); none for other backbones (only the penultimate layer is analysed there)."""
    backbone = model.backbone
    if not isinstance(backbone, CifarResNet):
        return {}
    per_stage = len(backbone.stages) // 3
    return {f"stage{i + 1}": backbone.stages[(i + 1) * per_stage - 1] for i in range(3)}


def layer_names(model: Classifier) -> list[str]:
    """Layers this module can analyse, input side first: the stages of :func:`stage_modules`, then the penultimate."""
    return [*stage_modules(model), PENULTIMATE]


@torch.no_grad()
def activations(model: Classifier, images: Tensor, layers: Sequence[str], *, batch_size: int = 500,
                device=None) -> tuple[Tensor, dict[str, Tensor]]:
    """(X, {layer: T}) for uint8 ``images`` (N, C, H, W): X the normalised input flattened, float32 (N, C*H*W); each
    T a layer's output flattened, float32 (N, D_layer); all on the CPU. The model runs in eval mode on ``device``."""
    allowed = layer_names(model)
    bad = [name for name in layers if name not in allowed]
    if bad:
        raise ValueError(f"layers must be a subset of {allowed}, got {list(layers)}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    stages = stage_modules(model)
    caught: dict[str, list[Tensor]] = {name: [] for name in layers}
    hooks = [stages[name].register_forward_hook(lambda m, i, out, name=name: caught[name].append(
        out.float().flatten(1).cpu())) for name in layers if name != PENULTIMATE]
    xs = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device).float().div_(255)
            feats, _ = model(x)
            xs.append(((x - model.input_mean) / model.input_std).flatten(1).float().cpu())
            if PENULTIMATE in caught:
                caught[PENULTIMATE].append(feats.float().cpu())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return torch.cat(xs), {name: torch.cat(v) for name, v in caught.items()}


@dataclasses.dataclass
class RenyiReference:
    """The parts of the Renyi estimates that do not change with the epoch: the Gram matrices of X (Gaussian, width
    by :func:`ctcbook.estimators.kernel_width`) and Y (delta kernel), float64 (n, n), and their entropies in bits."""

    kx: Tensor
    ky: Tensor
    h_x: float
    h_y: float
    alpha: float


def renyi_reference(x: Tensor, labels: Tensor, *, alpha: float = 1.01, device=None) -> RenyiReference:
    """:class:`RenyiReference` of the probe inputs x (float (n, D)) and labels (n,)."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x = x.to(dev)
    kx, ky = gaussian_gram(x, kernel_width(x)), label_gram(labels.to(dev))
    return RenyiReference(kx, ky, renyi_entropy(kx, alpha), renyi_entropy(ky, alpha), alpha)


def renyi_plane(ref: RenyiReference, ts: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """Matrix-based Renyi I(X;T), I(T;Y) and S(T) in bits for each layer's T (float (n, D), rows paired with the
    reference's). Each layer costs three eigen-decompositions of an n x n float64 matrix: S(T), S(X,T), S(T,Y)."""
    out = {}
    for name, t in ts.items():
        t = t.to(ref.kx.device)
        kt = gaussian_gram(t, kernel_width(t))
        st = renyi_entropy(kt, ref.alpha)
        out[name] = {"i_xt": ref.h_x + st - renyi_entropy(ref.kx * kt, ref.alpha),
                     "i_ty": st + ref.h_y - renyi_entropy(kt * ref.ky, ref.alpha),
                     "h_t": st, "h_x": ref.h_x, "h_y": ref.h_y}
    return out


def mine_plane(x: Tensor, t: Tensor, labels: Tensor, num_classes: int, settings_xt: MineSettings,
               settings_ty: MineSettings, *, device=None) -> dict[str, float]:
    """MINE's I(X;T) and I(T;Y) in bits for one layer's T (float (N, D)), with the paper's pairing (Y one-hot).

    A batch size larger than N is lowered to N (a small probe set, e.g. the UCI digits' 901 test images or a smoke
    run); the batch actually used is returned as ``batch``."""
    batch = min(settings_xt.batch_size, settings_ty.batch_size, len(x))
    settings_xt = dataclasses.replace(settings_xt, batch_size=min(settings_xt.batch_size, batch))
    settings_ty = dataclasses.replace(settings_ty, batch_size=min(settings_ty.batch_size, batch))
    xt = mine(x, t, settings_xt, device=device)
    ty = mine(t, one_hot(labels, num_classes), settings_ty, device=device)
    return {"i_xt": xt.mi_bits, "i_ty": ty.mi_bits, "seconds_xt": xt.seconds, "seconds_ty": ty.seconds,
            "batch": batch}


def _check_settings(estimator: str, n: int | None, alpha: float, mine_preset: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 2):
        raise ValueError(f"n must be None or an int >= 2, got {n!r}")
    if not (isinstance(alpha, (int, float)) and alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    if mine_preset not in MINE_PRESETS:
        raise ValueError(f"mine_preset must be one of {sorted(MINE_PRESETS)}, got {mine_preset!r}")


def information_curve(run: Run, splits: Sequence[str] = ("source",), *, estimators: Sequence[str] = ("renyi",),
                      every: int = 1, epochs: Sequence[int] | None = None, layers: Sequence[str] | None = None,
                      n: int | None = None, mine_n: int | None = 2000, alpha: float = 1.01,
                      mine_preset: str = "cpu", device=None, progress: bool = True) -> pd.DataFrame:
    """I(X;T) and I(T;Y) at each probed epoch of ``run``, for each split and estimator, cached in the run folder.

    splits: ``"source"`` and/or target keys. estimators: ``"renyi"`` and/or ``"mine"``. every: probe the epochs of
    :func:`ctcbook.chapters.ch1_tradeoff.probe_epochs` (1, every, 2 * every, ..., last), or pass ``epochs`` explicitly.
    layers: for ``"renyi"``, the layers of :func:`layer_names` to analyse (default: all of them on ``"source"``, the
    penultimate only on targets); MINE always uses the penultimate layer. n: Renyi probe images per split (default
    1000; O(n^3)); mine_n: the images MINE draws its batches from (default 2000, capped at the split's size).
    mine_preset: ``"cpu"`` (:data:`CPU_MINE_XT`, :data:`CPU_MINE_TY`) or ``"paper"`` (the paper's settings).

    Returns a DataFrame, one row per (split, estimator, epoch, layer), with columns ``seed``, ``split``,
    ``estimator``, ``epoch``, ``layer``, ``i_xt`` and ``i_ty`` (bits), ``seconds`` (compute time of the row) and
    ``n`` (probe images used); Renyi rows also hold ``h_t`` (S(T), bits).
    """
    for split in splits:
        _check_split(split)
    for estimator in estimators:
        _check_settings(estimator, n, alpha, mine_preset)
    saved = set(run.saved_epochs())
    if epochs is None:
        epochs = probe_epochs(run.config["epochs"], every)
    else:
        bad = [e for e in epochs if e not in saved]
        if bad:
            raise ValueError(f"epochs {bad} have no checkpoint in {run.name}; saved: {sorted(saved)}")
    epochs = [e for e in epochs if e in saved]
    device = torch.device(device) if device is not None else default_device()

    jobs = []   # (split, estimator, layers, n, cache path)
    for split in splits:
        for estimator in estimators:
            if estimator == "renyi":
                use_n = n if n is not None else 1000
                names = list(layers) if layers is not None else None
                spec = {"split": split, "estimator": "renyi", "n": use_n, "alpha": alpha, "version": INFO_VERSION}
            else:
                use_n, names = mine_n, [PENULTIMATE]
                xt, ty = MINE_PRESETS[mine_preset]
                spec = {"split": split, "estimator": "mine", "n": use_n, "xt": dataclasses.asdict(xt),
                        "ty": dataclasses.asdict(ty), "version": INFO_VERSION}
            jobs.append((split, estimator, names, use_n, spec))

    all_layers = layer_names(load_model(run, epochs[0], "cpu")) if epochs else [PENULTIMATE]
    todo = []
    for split, estimator, names, use_n, spec in jobs:
        wanted = names if names is not None else (all_layers if split == "source" else [PENULTIMATE])
        bad = [lay for lay in wanted if lay not in all_layers]
        if bad:
            raise ValueError(f"layers must be a subset of {all_layers}, got {list(wanted)}")
        path = run.eval_path("information", spec)
        done = {(r["epoch"], r["layer"]) for r in read_jsonl(path)}
        todo.append((split, estimator, wanted, use_n, path, done))
    pending = [e for e in epochs if any((e, lay) not in done for _, _, wanted, _, _, done in todo for lay in wanted)]
    sets: dict[tuple[str, int | None], ImageSet] = {}
    refs: dict[tuple[str, int | None], RenyiReference] = {}
    for epoch in tqdm(pending, desc=f"information {run.name}", disable=not progress or not pending, unit="epoch"):
        model = load_model(run, epoch, device)
        for split, estimator, wanted, use_n, path, done in todo:
            missing = [lay for lay in wanted if (epoch, lay) not in done]
            if not missing:
                continue
            key = (split, use_n)
            if key not in sets:
                sets[key] = probe_set(run, split, use_n)
            images = sets[key]
            start = time.perf_counter()
            x, ts = activations(model, images.images, missing, device=device)
            if estimator == "renyi":
                if key not in refs:
                    refs[key] = renyi_reference(x, images.labels, alpha=alpha, device=device)
                res = renyi_plane(refs[key], ts)
                per_layer = (time.perf_counter() - start) / len(missing)
                for lay in missing:
                    append_jsonl(path, {"epoch": epoch, "layer": lay, "n": len(images), "seconds": per_layer,
                                        **res[lay]}, unique=("epoch", "layer"))
                    done.add((epoch, lay))
            else:
                xt, ty = MINE_PRESETS[mine_preset]
                res = mine_plane(x, ts[PENULTIMATE], images.labels, len(images.classes), xt, ty, device=device)
                append_jsonl(path, {"epoch": epoch, "layer": PENULTIMATE, "n": len(images),
                                    "seconds": time.perf_counter() - start, **res}, unique=("epoch", "layer"))
                done.add((epoch, PENULTIMATE))
    frames = []
    for split, estimator, wanted, use_n, path, done in todo:
        for r in read_jsonl(path):
            if r["epoch"] in epochs and r["layer"] in wanted:
                frames.append({"seed": run.config["seed"], "split": split, "estimator": estimator, **r})
    table = pd.DataFrame(frames)
    if len(table):
        table = table.drop_duplicates(["split", "estimator", "epoch", "layer"], keep="last")
        table = table.sort_values(["split", "estimator", "layer", "epoch"]).reset_index(drop=True)
    return table


def information_curves(runs: Sequence[Run], splits: Sequence[str] = ("source",), **kwargs) -> pd.DataFrame:
    """:func:`information_curve` of several runs (e.g. seeds), concatenated."""
    frames = [information_curve(run, splits, **kwargs) for run in runs]
    return pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else \
        pd.DataFrame()


# --------------------------------------------------------------------------------------------------- summaries
def seed_mean(info: pd.DataFrame, estimator: str, split: str, layer: str = PENULTIMATE) -> pd.DataFrame:
    """Seed-mean ``i_xt`` and ``i_ty`` per epoch (columns epoch, i_xt, i_ty, seeds) of one curve."""
    g = info[(info.estimator == estimator) & (info.split == split) & (info.layer == layer)]
    return g.groupby("epoch").agg(i_xt=("i_xt", "mean"), i_ty=("i_ty", "mean"), seeds=("seed", "nunique")) \
        .reset_index()


def compression(curve: pd.DataFrame, column: str = "i_xt") -> dict[str, float]:
    """Where a seed-mean curve (columns epoch, ``column``) peaks and how far it falls after.

    Returns peak_epoch (the epoch of the maximum, after which it "starts to fall"), peak, final (value at the last
    epoch), fall = peak - final (bits, >= 0), and fall_fraction = fall / (peak - min over epochs up to the peak)
    when that range is positive (how much of the rise is given back), else NaN.
    """
    if curve.empty:
        raise ValueError("the curve is empty: no estimate for this split/estimator/layer")
    c = curve.sort_values("epoch")
    i = int(np.argmax(c[column].to_numpy()))
    peak, final = float(c[column].iloc[i]), float(c[column].iloc[-1])
    rise = peak - float(c[column].iloc[:i + 1].min())
    return {"peak_epoch": int(c.epoch.iloc[i]), "peak": peak, "final": final, "fall": peak - final,
            "fall_fraction": (peak - final) / rise if rise > 0 else float("nan")}


def correlation(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(Pearson r, Spearman rho) of two equally long sequences; NaN when either is constant or shorter than 3."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"sequences must have the same length, got {len(a)} and {len(b)}")
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan"), float("nan")
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(ra, rb)[0, 1])


def transfer_link(info: pd.DataFrame, table: pd.DataFrame, targets: Sequence[str],
                  column: str = "probe_acc") -> pd.DataFrame:
    """Per estimator and target: the epoch where the seed-mean I(X;T) on that target's test split starts to fall,
    the epoch of the seed-mean transfer peak, and the correlation across epochs between I(X;T) and transfer accuracy
    (seed means, at the epochs both were measured). ``table`` is chapter 1's :func:`ctcbook.chapters.ch1_tradeoff.curves`
    output; each estimator is correlated on its own epochs and seeds."""
    rows = []
    for estimator in sorted(info.estimator.unique()):
        for key in targets:
            curve = seed_mean(info, estimator, key)
            if curve.empty:
                continue
            seeds = info[(info.estimator == estimator) & (info.split == key)].seed.unique()
            acc = table[(table.target == key) & table.seed.isin(seeds)].groupby("epoch")[column].mean()
            both = curve[curve.epoch.isin(acc.index)]
            pearson, spearman = correlation(both.i_xt, acc.loc[both.epoch])
            comp = compression(curve)
            rows.append({"estimator": estimator, "target": key, "seeds": len(seeds), "epochs": len(both),
                         "i_xt_peak_epoch": comp["peak_epoch"], "i_xt_peak": comp["peak"], "i_xt_final": comp["final"],
                         "i_xt_fall": comp["fall"], "transfer_peak_epoch": int(acc.idxmax()),
                         "pearson": pearson, "spearman": spearman})
    return pd.DataFrame(rows)


def cost_table(info: pd.DataFrame) -> pd.DataFrame:
    """Seconds per checkpoint (mean over epochs and seeds, summed over layers) per estimator and split."""
    per_ckpt = info.groupby(["estimator", "split", "seed", "epoch"]).agg(seconds=("seconds", "sum"), n=("n", "first"),
                                                                         layers=("layer", "nunique")).reset_index()
    return per_ckpt.groupby(["estimator", "split"]).agg(seconds_per_checkpoint=("seconds", "mean"),
                                                        n=("n", "first"), layers=("layers", "max")).reset_index()


def _fmt(v: float, digits: int = 2) -> str:
    return "n/a" if v != v else f"{v:+.{digits}f}"


def findings_markdown(link: pd.DataFrame, every: dict[str, int]) -> str:
    """Plain statements, computed from :func:`transfer_link`'s table, of whether the fall of I(X;T) coincides with
    the loss of transferability per estimator and target, and whether the estimators agree. ``every``: the probe
    interval in epochs of each estimator (two epochs within one interval count as coinciding)."""
    lines = []
    for est, g in link.groupby("estimator", sort=False):
        for r in g.itertuples():
            lag = r.transfer_peak_epoch - r.i_xt_peak_epoch
            if r.i_xt_fall <= 0:
                where = "I(X;T) is highest at the last probed epoch: it does not fall"
            else:
                where = (f"I(X;T) peaks at epoch {r.i_xt_peak_epoch} ({r.i_xt_peak:.3f} bits) and ends "
                         f"{r.i_xt_fall:.3f} bits lower")
            together = ("within one probe interval of" if abs(lag) <= every.get(est, 1) else
                        f"{abs(lag)} epochs {'before' if lag < 0 else 'after'}")
            lines.append(f"- **{est}, `{r.target}`** ({r.seeds} seed{'s' if r.seeds > 1 else ''}, {r.epochs} epochs): "
                         f"{where}; the transfer peak (epoch {r.transfer_peak_epoch}) comes {together} the I(X;T) "
                         f"peak. Correlation across epochs between I(X;T) and probe accuracy: Pearson "
                         f"{_fmt(r.pearson)}, Spearman {_fmt(r.spearman)}.")
    ests = list(dict.fromkeys(link.estimator))
    if len(ests) == 2:
        a = link[link.estimator == ests[0]].set_index("target")
        b = link[link.estimator == ests[1]].set_index("target")
        both = a.index.intersection(b.index)
        same_sign = [t for t in both if np.sign(a.spearman[t]) == np.sign(b.spearman[t])]
        strong = [t for t in both if min(abs(a.spearman[t]), abs(b.spearman[t])) >= 0.5]
        lines.append(f"- **Agreement**: the two estimators' Spearman correlations with transfer accuracy have the same "
                     f"sign on {len(same_sign)} of {len(both)} targets, and both reach |rho| >= 0.5 on "
                     f"{len(strong)}" + (f" ({', '.join(f'`{t}`' for t in strong)})" if strong else "")
                     + "; a same sign between two correlations near zero is no agreement.")
    return "\n".join(lines)


def settings_markdown(n: int, mine_n: int, mine_preset: str, alpha: float = 1.01) -> str:
    """What each estimator ran with, and for MINE what was shrunk relative to the paper's settings."""
    xt, ty = MINE_PRESETS[mine_preset]
    pxt, pty = PAPER_MINE_XT, PAPER_MINE_TY

    def desc(s: MineSettings) -> str:
        return (f"{s.layers} x {s.hidden} ReLU statistics network, Adam lr {s.lr:g}, {s.iterations:,} steps on batches "
                f"of {s.batch_size:,}, moving-average rate {s.ema_rate:g}, reported value = last point of a "
                f"{s.smoothing}-step moving average")
    text = [f"- **Renyi**: alpha = {alpha}, {n:,} probe images per split, Gaussian kernels with width = median "
            f"pairwise distance x n^(-1/(4+d)) (per layer and epoch), delta kernel on labels; cost O(n^3).",
            f"- **MINE** (`{mine_preset}` settings), batches drawn from up to {mine_n:,} probe images: I(X;T) with "
            f"{desc(xt)}; I(T;Y) with {desc(ty)}."]
    if mine_preset != "paper":
        text.append(f"- **The paper's MINE** (`mine.py`): I(X;T) with {desc(pxt)}; I(T;Y) with {desc(pty)}. Shrunk "
                    f"here: network width {pxt.hidden} -> {xt.hidden}, steps {pxt.iterations:,} / {pty.iterations:,} -> "
                    f"{xt.iterations:,} / {ty.iterations:,}, batch {pxt.batch_size:,} -> {xt.batch_size:,}, "
                    f"learning rate raised to {xt.lr:g} / {ty.lr:g}, smoothing {pxt.smoothing} -> {xt.smoothing}. "
                    f"Our MINE values are therefore lower bounds from short optimisations, not converged estimates.")
    return "\n".join(text)


def _fall_per_seed(g: pd.DataFrame, column: str) -> np.ndarray:
    """Per seed: maximum over epochs minus the value at the last epoch (>= 0)."""
    return np.array([float(d[column].max() - d.sort_values("epoch")[column].iloc[-1]) for _, d in g.groupby("seed")])


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    return float(v.mean()), (float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"))


def verdict_markdown(info: pd.DataFrame, table: pd.DataFrame, targets: Sequence[str],
                     estimator: str = "renyi", column: str = "probe_acc") -> str:
    """Whether over-compression coincides with the loss of transferability, per target, stated plainly.

    Per seed: the fall of I(X;T) (penultimate layer, on the target's probe set) from its maximum over epochs to the
    last epoch, and the fall of the target's probe accuracy likewise (chapter 1's ``table``). A fall counts as clear
    when its seed mean exceeds twice its standard error over seeds (needs >= 2 seeds). The two coincide on a target
    when both fall clearly."""
    lines, both = [], []
    for key in targets:
        g = info[(info.estimator == estimator) & (info.split == key) & (info.layer == PENULTIMATE)]
        t = table[(table.target == key) & table.seed.isin(g.seed.unique())]
        if g.empty or t.empty:
            continue
        fi, fi_se = _mean_se(_fall_per_seed(g, "i_xt"))
        ft, ft_se = _mean_se(100 * _fall_per_seed(t, column))
        clear_i = fi_se == fi_se and fi > 2 * fi_se
        clear_t = ft_se == ft_se and ft > 2 * ft_se
        if clear_i and clear_t:
            both.append(key)
        word = lambda c: "a clear fall" if c else "no fall beyond seed noise"
        lines.append(f"- `{key}`: I(X;T) falls by {fi:.3f} ± {fi_se:.3f} bits from its peak to the last epoch "
                     f"({word(clear_i)}); the probe accuracy by {ft:.2f} ± {ft_se:.2f} points ({word(clear_t)}); "
                     f"mean ± standard error over {g.seed.nunique()} seeds.")
    head = (f"**Verdict ({estimator})**: over-compression (a clear late fall of I(X;T)) coincides with a clear late loss "
            f"of transferability on {len(both)} of {len(lines)} targets"
            + (f" ({', '.join(f'`{k}`' for k in both)})." if both else "."))
    note = ("Both falls are taken from each seed's own maximum over the probed epochs, which is biased upwards (the "
            "largest of several noisy values), so 'clear' here is a lenient test; chapter 1 compares the seed-mean "
            "curve's drop with the measurement noise instead, a stricter one.")
    return "\n".join([head, *lines, "", note])


def epoch_values(info: pd.DataFrame, table: pd.DataFrame, split: str, column: str = "probe_acc") -> pd.DataFrame:
    """I(X;T) and I(T;Y) (bits, seed means, penultimate layer) of each estimator on ``split`` at its first epoch, at
    the epoch of the seed-mean transfer peak on that split (the nearest epoch the estimator measured) and at its last
    epoch, with the probe accuracy (%) there."""
    acc = table[table.target == split].groupby("epoch")[column].mean()
    peak = int(acc.idxmax())
    rows = []
    for est in sorted(info.estimator.unique()):
        m = seed_mean(info, est, split)
        if m.empty:
            continue
        epochs = m.epoch.to_numpy()
        picks = {"first": int(epochs.min()), "transfer peak": int(epochs[np.argmin(np.abs(epochs - peak))]),
                 "final": int(epochs.max())}
        for label, e in picks.items():
            r = m[m.epoch == e].iloc[0]
            rows.append({"estimator": est, "split": split, "point": label, "epoch": e, "i_xt": float(r.i_xt),
                         "i_ty": float(r.i_ty), "probe_acc": 100 * float(acc.get(e, np.nan))})
    return pd.DataFrame(rows)
