"""Location and date metadata per image: the iNaturalist 2021 annotation reader and the simulated default.

Both give :class:`MetadataArrays`, which :func:`ctcbook.models.dynamic_mlp.encode_metadata` turns into vectors.

The iNat21 reader follows the Dynamic MLP code (``dataset.py``): path = the JSON's folder / ``file_name``, label =
``category_id``, date = the first ten characters of ``date``, a row valid only with latitude, longitude *and* date.
Unlike that code it matches annotations to images by ``image_id``, not by position.
"""
from __future__ import annotations

import calendar
import dataclasses
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .sources import DataCorruptError, DataNotFoundError, places

INAT_SPLITS = ("train_mini", "train", "val")
INAT_HOW = ("download the annotation files (train_mini.json.tar.gz, val.json.tar.gz, ...) and the matching image "
            "tarballs listed at https://github.com/visipedia/inat_comp/tree/master/2021, unpack them into one folder "
            "(it then holds train_mini.json and train_mini/...), and pass that folder as root or put it at "
            "$CTCBOOK_DATA/inat21")


@dataclass(frozen=True)
class MetadataArrays:
    """Per-image numpy (N,) arrays: degrees and day of year (NaN where missing), year length, and ``valid`` (all
    present, the paper code's rule)."""
    latitude: np.ndarray
    longitude: np.ndarray
    day_of_year: np.ndarray
    days_in_year: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.latitude)

    def encode(self, use_location: bool = True, use_date: bool = True):
        """The encoded vectors, float32 torch tensor (N, 6 | 4 | 2); invalid rows are zeros."""
        from ..models.dynamic_mlp import encode_metadata
        return encode_metadata(self.latitude, self.longitude, self.day_of_year, days_in_year=self.days_in_year,
                               use_location=use_location, use_date=use_date, valid=self.valid)


@dataclass(frozen=True)
class INatRecords(MetadataArrays):
    """One iNat21 split: the :class:`MetadataArrays` fields, (N,) paths, labels and image ids, and class names."""
    paths: np.ndarray
    labels: np.ndarray
    image_ids: np.ndarray
    class_names: list

    @property
    def metadata(self) -> MetadataArrays:
        return MetadataArrays(self.latitude, self.longitude, self.day_of_year, self.days_in_year, self.valid)


def _coord(v, name: str, image_id) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"image {image_id}: {name} must be a number or null, got {v!r}") from None


def read_inat_json(path: str | os.PathLike) -> INatRecords:
    """One iNat21 annotation file (COCO-like JSON) as :class:`INatRecords`, images in file order, paths under the
    JSON's folder. Labels are -1 only in a file without ``annotations`` (the test split)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("inat21", [path], INAT_HOW)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataCorruptError("inat21", path, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataCorruptError("inat21", path, "no 'images' list at the top level")
    images = data["images"]
    ids = np.array([int(im["id"]) for im in images], dtype=np.int64)
    if len(set(ids.tolist())) != len(ids):
        raise DataCorruptError("inat21", path, "duplicate image ids")
    if "annotations" in data:
        by_id: dict[int, int] = {}
        for ann in data["annotations"]:
            iid = int(ann["image_id"])
            if iid in by_id:
                raise DataCorruptError("inat21", path, f"image {iid} has more than one annotation")
            by_id[iid] = int(ann["category_id"])
        missing = [i for i in ids.tolist() if i not in by_id]
        if missing:
            raise DataCorruptError("inat21", path, f"{len(missing)} images have no annotation, e.g. {missing[:3]}")
        labels = np.array([by_id[i] for i in ids.tolist()], dtype=np.int64)
    else:
        labels = np.full(len(ids), -1, dtype=np.int64)
    cats = sorted(data.get("categories", []), key=lambda c: int(c["id"]))
    class_names = [str(c.get("name", c["id"])) for c in cats]
    if len(labels) and labels.max() >= max(len(cats), 1):
        raise DataCorruptError("inat21", path, f"category_id {labels.max()} is not below the number of categories "
                                               f"({len(cats)})")
    lat = np.array([_coord(im.get("latitude"), "latitude", im["id"]) for im in images], dtype=np.float64)
    lon = np.array([_coord(im.get("longitude"), "longitude", im["id"]) for im in images], dtype=np.float64)
    days, year_len = np.full(len(ids), math.nan), np.full(len(ids), 365, dtype=np.int64)
    for i, im in enumerate(images):
        if im.get("date") in (None, ""):  # missing: NaN, the row not valid
            continue
        try:  # "2010-07-14 20:19:00+00:00": the first ten characters
            d = _dt.datetime.strptime(str(im["date"])[:10], "%Y-%m-%d")
        except ValueError:
            raise ValueError(f"{path}: image {im['id']}: date {im['date']!r} is not 'YYYY-MM-DD...'") from None
        days[i], year_len[i] = d.timetuple().tm_yday, 366 if calendar.isleap(d.year) else 365
    valid = np.isfinite(lat) & np.isfinite(lon) & np.isfinite(days)
    paths = np.array([str(path.parent / im["file_name"]) for im in images], dtype=object)
    return INatRecords(lat, lon, days, year_len, valid, paths, labels, ids, class_names)


def load_inat21(root: str | os.PathLike | None = None, split: str = "train_mini") -> INatRecords:
    """Read ``<split>.json`` from ``root``, ``$CTCBOOK_DATA/inat21`` or ``./data/inat21``, the first that has it."""
    if split not in INAT_SPLITS:
        raise ValueError(f"split must be one of {INAT_SPLITS}, got {split!r}")
    name = f"{split}.json"
    tried = places(root, [name], [f"inat21/{name}"]) + [Path("data").resolve() / "inat21" / name]
    for p in tried:
        if p.is_file():
            return read_inat_json(p)
    raise DataNotFoundError("inat21", tried, INAT_HOW)


# --- simulated metadata ---------------------------------------------------------------------------------------------
def _reflect_poles(lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walking past a pole: latitude reflected back into [-90, 90], longitude moved by 180 degrees."""
    lat, lon = lat.copy(), lon.copy()
    while True:
        over, under = lat > 90.0, lat < -90.0
        if not (over.any() or under.any()):
            return lat, (lon + 180.0) % 360.0 - 180.0
        lat[over], lat[under] = 180.0 - lat[over], -180.0 - lat[under]
        lon[over | under] += 180.0


class MetadataSimulator:
    """Simulated (not real) class-conditional location and day-of-year distributions (:meth:`describe`: the recipe).

    With ``interaction`` a > 0, :meth:`render` adds to each image its confusable group's stripe pattern at amplitude
    127.5 a s_k(lat, day) (:meth:`signal`): the local season, flipping with the hemisphere, shifted per class, so that
    only image and metadata *together* tell a group's classes apart (an additive log-prior of the metadata cannot)."""

    def __init__(self, num_classes: int = 10, *, seed: int = 0, location_spread: float = 25.0,
                 date_spread: float = 45.0, background: float = 0.3, lat_range: tuple[float, float] = (-60.0, 60.0),
                 missing_fraction: float = 0.0, class_names: Sequence[str] | None = None,
                 interaction: float = 0.0, groups: Sequence[Sequence[int]] | None = None):
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        for name, v in (("location_spread", location_spread), ("date_spread", date_spread)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not 0.0 <= background <= 1.0:
            raise ValueError(f"background must lie in [0, 1], got {background!r}")
        if not 0.0 <= missing_fraction < 1.0:
            raise ValueError(f"missing_fraction must lie in [0, 1), got {missing_fraction!r}")
        lo, hi = lat_range
        if not -90.0 <= lo < hi <= 90.0:
            raise ValueError(f"lat_range must satisfy -90 <= low < high <= 90, got {lat_range!r}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} entries, expected num_classes = {num_classes}")
        if isinstance(interaction, bool) or not (isinstance(interaction, (int, float)) and 0.0 <= interaction <= 1.0):
            raise ValueError(f"interaction must be a number in [0, 1], got {interaction!r}")
        self.interaction = float(interaction)
        self.groups = _check_groups(groups, num_classes)
        # per class k: its group g_k, its place j_k in the group and the group's size n_k
        self._group, self._place, self._group_size = (np.zeros(num_classes, dtype=np.int64) for _ in range(3))
        for gi, members in enumerate(self.groups):
            for ji, k in enumerate(members):
                self._group[k], self._place[k], self._group_size[k] = gi, ji, len(members)
        self.num_classes, self.seed = num_classes, int(seed)
        self.location_spread, self.date_spread = float(location_spread), float(date_spread)
        self.background, self.missing_fraction = float(background), float(missing_fraction)
        self.lat_range = (float(lo), float(hi))
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0]))
        self.centre_lat = rng.uniform(lo, hi, num_classes)
        self.centre_lon = rng.uniform(-180.0, 180.0, num_classes)
        self.peak_day = rng.integers(1, 366, num_classes).astype(np.int64)

    def sample(self, labels, sample_seed: int = 0) -> MetadataArrays:
        """Metadata for images of these labels, deterministic in (seed, sample_seed): one ``sample_seed`` a split."""
        m, miss = self._draw(labels, sample_seed)
        hidden = {"latitude": np.where(miss, np.nan, m.latitude), "longitude": np.where(miss, np.nan, m.longitude)}
        return dataclasses.replace(m, **hidden, valid=~miss)

    def latent(self, labels, sample_seed: int = 0) -> MetadataArrays:
        """As :meth:`sample` but with every location kept (what the images were rendered with); valid all True."""
        return self._draw(labels, sample_seed)[0]

    def _draw(self, labels, sample_seed: int) -> tuple[MetadataArrays, np.ndarray]:
        """(the metadata with every location kept, the missing flags)."""
        y = self._check_labels(labels)
        n = len(y)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1, int(sample_seed)]))
        is_bg = rng.random(n) < self.background
        noise = rng.normal(0.0, 1.0, (3, n))
        bg_lat = rng.uniform(*self.lat_range, n)
        bg_lon = rng.uniform(-180.0, 180.0, n)
        bg_day = rng.integers(1, 366, n)
        miss = rng.random(n) < self.missing_fraction
        lat = np.where(is_bg, bg_lat, self.centre_lat[y] + self.location_spread * noise[0])
        lon = np.where(is_bg, bg_lon, self.centre_lon[y] + self.location_spread * noise[1])
        lat, lon = _reflect_poles(lat, lon)
        day = np.rint(self.peak_day[y] + self.date_spread * noise[2])
        day = np.where(is_bg, bg_day, (day - 1) % 365 + 1).astype(np.float64)
        return MetadataArrays(lat, lon, day, np.full(n, 365, dtype=np.int64), np.ones(n, dtype=bool)), miss

    def _check_labels(self, labels) -> np.ndarray:
        y = np.asarray(labels)
        if y.ndim != 1 or (len(y) and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0
                                        or y.max() >= self.num_classes)):
            raise ValueError(f"labels must be a 1-d integer array with values in 0..{self.num_classes - 1}")
        return y

    # --- the image-metadata interaction ----------------------------------------------------------------------
    def signal(self, labels, latitude, day_of_year) -> np.ndarray:
        """s_k = cos(2 pi (day - 172) / 365 - 2 pi j / n) tanh(lat / 15 deg) in [-1, 1] per image, for the class's
        place j in its group of n."""
        y = self._check_labels(labels)
        lat, day = np.asarray(latitude, dtype=np.float64), np.asarray(day_of_year, dtype=np.float64)
        if lat.shape != y.shape or day.shape != y.shape or not (np.isfinite(lat).all() and np.isfinite(day).all()):
            raise ValueError("latitude and day_of_year must be finite arrays shaped like labels (use latent())")
        j, n = self._place[y], self._group_size[y]
        return np.cos(2 * np.pi * (day - 172.0) / 365.0 - 2 * np.pi * j / n) * np.tanh(lat / 15.0)

    def pattern(self, group: int, size: tuple[int, int]) -> np.ndarray:
        """The stripe pattern P_g (H, W) in [-1, 1]: 3 cycles per width at orientation pi g / G."""
        if not 0 <= group < len(self.groups):
            raise ValueError(f"group must lie in 0..{len(self.groups) - 1}, got {group!r}")
        h, w = size
        theta = np.pi * group / len(self.groups)
        v, u = np.meshgrid(np.arange(h) / h, np.arange(w) / w, indexing="ij")
        return np.sin(2 * np.pi * 3.0 * (u * np.cos(theta) + v * np.sin(theta)))

    def render(self, images, labels, latent: MetadataArrays):
        """uint8 images with the interaction pattern at the ``latent`` metadata (``interaction`` 0: the input)."""
        if self.interaction == 0.0:
            return images
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
        y = self._check_labels(labels)
        if len(y) != len(x) or len(latent) != len(x):
            raise ValueError(f"images ({len(x)}), labels ({len(y)}) and latent ({len(latent)}) differ in length")
        s = self.signal(y, latent.latitude, latent.day_of_year)
        pats = torch.as_tensor(np.stack([self.pattern(i, tuple(x.shape[-2:])) for i in range(len(self.groups))]),
                               dtype=torch.float32)
        amp = torch.as_tensor(127.5 * self.interaction * s, dtype=torch.float32)
        out = x.float() + amp[:, None, None, None] * pats[torch.as_tensor(self._group[y])][:, None]
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        return out.numpy() if isinstance(images, np.ndarray) else out

    def at_metadata(self, image, label: int, latitudes: Sequence[float], days: Sequence[float]):
        """One image (C, H, W) of class ``label`` rendered at P (latitude, day) pairs -> (P, C, H, W)."""
        x = torch.as_tensor(image)
        if x.ndim != 3:
            raise ValueError(f"image must be (C, H, W), got shape {tuple(x.shape)}")
        if len(latitudes) != len(days) or not len(days):
            raise ValueError(f"latitudes and days must be non-empty and of one length, got {len(latitudes)}, "
                             f"{len(days)}")
        p = len(days)
        meta = MetadataArrays(np.asarray(latitudes, float), np.zeros(p), np.asarray(days, float),
                              np.full(p, 365, dtype=np.int64), np.ones(p, dtype=bool))
        return self.render(x.unsqueeze(0).expand(p, -1, -1, -1).contiguous(), np.full(p, int(label)), meta)

    def log_likelihood(self, meta: MetadataArrays) -> np.ndarray:
        """Exact log p(m | y = k) (N, K) of the observed metadata: location density in 1/deg^2 (summed over the
        preimages of the pole fold and longitude wrap) times the day's mass; a missing location is marginalised out
        (the missing flag is independent of the class, so it cancels in p(y | m))."""
        from scipy.stats import norm

        lat, lon, day = (np.asarray(a, dtype=np.float64) for a in (meta.latitude, meta.longitude, meta.day_of_year))
        has_loc = np.isfinite(lat) & np.isfinite(lon) & np.asarray(meta.valid, bool)
        if not np.isfinite(day).all():
            raise ValueError("day_of_year must be present for every image (the simulator never hides it)")
        sd, sl = max(self.date_spread, 1e-9), max(self.location_spread, 1e-9)
        # Day: P(round(d_k + sd z) = d + 365 w) summed over wraps w.
        dk = self.peak_day[None, :].astype(np.float64)
        p_day = np.zeros((len(day), self.num_classes))
        for w in range(-3, 4):
            c = day[:, None] + 365.0 * w
            p_day += norm.cdf((c + 0.5 - dk) / sd) - norm.cdf((c - 0.5 - dk) / sd)
        # Location: latitude preimages L = lat + 360 r (longitude unchanged) and L = 180 - lat + 360 r (longitude
        # + 180), longitude wrapped by 360 n.
        la, lo = np.where(has_loc, lat, 0.0)[:, None], np.where(has_loc, lon, 0.0)[:, None]
        p_loc = np.zeros_like(p_day)
        for r in (-1, 0, 1):
            for lat_pre, shift in ((la + 360.0 * r, 0.0), (180.0 - la + 360.0 * r, 180.0)):
                p_lat = norm.pdf((lat_pre - self.centre_lat[None, :]) / sl) / sl
                p_lon = np.zeros_like(p_lat)
                for n in range(-2, 3):
                    p_lon += norm.pdf((lo + shift + 360.0 * n - self.centre_lon[None, :]) / sl) / sl
                p_loc += p_lat * p_lon
        lo_r, hi_r = self.lat_range
        bg_loc = np.where((la >= lo_r) & (la <= hi_r), 1.0 / ((hi_r - lo_r) * 360.0), 0.0)
        b = self.background
        joint = b * bg_loc / 365.0 + (1 - b) * p_loc * p_day
        day_only = b / 365.0 + (1 - b) * p_day
        with np.errstate(divide="ignore"):
            return np.log(np.where(has_loc[:, None], joint, day_only))

    def describe(self) -> str:
        """A plain-text recipe of exactly how the metadata was drawn, with the class table."""
        lo, hi = self.lat_range
        lines = [
            "SIMULATED metadata (not real observations): location and day of year are attached to each image at "
            "random, from a distribution that depends only on the image's class.",
            f"Class parameters (seed {self.seed}): for each of the {self.num_classes} classes a location centre "
            f"lat_k ~ Uniform({lo:g}, {hi:g}) deg, lon_k ~ Uniform(-180, 180) deg, and a peak day d_k ~ "
            "Uniform{1..365}.",
            f"Each image of class k: with probability {self.background:g} from a class-independent background "
            f"(lat ~ Uniform({lo:g}, {hi:g}), lon ~ Uniform(-180, 180), day ~ Uniform{{1..365}}); otherwise "
            f"lat = lat_k + N(0, {self.location_spread:g}^2), lon = lon_k + N(0, {self.location_spread:g}^2) "
            "(degrees; reflected at the poles, wrapped to [-180, 180)), "
            f"day = round(d_k + N(0, {self.date_spread:g}^2)) wrapped to 1..365 (a 365-day year).",
            f"Missing location: each image with probability {self.missing_fraction:g} (then its whole metadata "
            "vector is zeros, as for iNat's null values).",
            "Per-image draws are seeded by (class seed, split seed), so train and test share the classes' "
            "distributions but not the draws.",
            "class | lat_k | lon_k | d_k",
        ]
        if self.interaction > 0:
            lines.insert(-1, (
                f"Image-metadata interaction a = {self.interaction:g}: each image gets a grey stripe pattern "
                "(3 cycles per width, orientation by confusable group) added with amplitude 127.5 a s grey levels, "
                "s = cos(2 pi (day - 172) / 365 - 2 pi j / n) tanh(lat / 15 deg), j = the class's place in its "
                f"group of n; groups: {self.groups}."))

        for k in range(self.num_classes):
            lines.append(f"{self.class_names[k]} | {self.centre_lat[k]:.1f} | {self.centre_lon[k]:.1f} | "
                         f"{self.peak_day[k]}")
        return "\n".join(lines)


def bayes_posterior(image_probs, log_lik: np.ndarray, class_prior=None) -> np.ndarray:
    """p(y | x, m) proportional to p(y | x) p(m | y) / p(y) (N, K), for metadata independent of the image given the
    class (``interaction`` 0); ``class_prior`` default uniform."""
    p = np.asarray(image_probs, dtype=np.float64)
    if p.shape != log_lik.shape:
        raise ValueError(f"image_probs {p.shape} and log_lik {log_lik.shape} must have one shape (N, K)")
    prior = np.full(p.shape[1], 1.0 / p.shape[1]) if class_prior is None else np.asarray(class_prior, float)
    from scipy.special import softmax

    with np.errstate(divide="ignore"):
        return softmax(np.log(np.clip(p, 1e-300, None)) + log_lik - np.log(prior)[None, :], axis=1)


def _check_groups(groups, num_classes: int) -> list[list[int]]:
    """Confusable groups as lists of class indices, each class at most once; the rest become groups of one."""
    out = [[int(k) for k in members] for members in groups or []]
    seen = [k for members in out for k in members]
    if any(not members for members in out) or any(not 0 <= k < num_classes for k in seen):
        raise ValueError(f"groups must be non-empty lists of class indices in 0..{num_classes - 1}, got {groups!r}")
    if len(set(seen)) != len(seen):
        raise ValueError(f"groups must not share classes, got {groups!r}")
    return out + [[k] for k in range(num_classes) if k not in seen]
