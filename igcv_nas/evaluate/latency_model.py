"""Kernel-level learned latency predictor beside the LUT sum (issue #15).

The LUT predictor (:mod:`igcv_nas.evaluate.latency`) sums whole-block entries measured in isolation
and corrects the sum by one scale; it cannot price a piece it has not measured, nor the cache and
fusion effects between neighbours. This module learns both, nn-Meter style, from what a LUT
already holds:

Features (:func:`piece_features`, :func:`context_features`)
    Computed from a LUT **key** alone (the key names everything that changes a piece's run time, see
    :func:`igcv_nas.evaluate.latency.block_key`), so every existing LUT file is training data. Per
    piece: its kind (stem / head / block kind), activation, residual flag, input and output
    resolution, input / output / widest channels, number of convs, most groups of a conv, whether a
    conv has uneven group runs, largest kernel, total stride, number of view-transpose shuffles and
    of gather permutations, MACs, conv + linear weights, activation elements read and written by its
    convs (input + output of each conv, + the residual add), bytes moved (``bytes_per_element x
    (activations + weights)``, fp32 = 4, fp16 / bf16 = 2), MACs per byte, batch, memory format and
    AMP dtype. All sizes are at the key's batch. In context (inside a network) the neighbours are
    added: previous and next piece's kind, output activation elements and MACs, and the piece's
    relative position.

Models (:class:`LearnedPredictor`, scikit-learn ``GradientBoostingRegressor``, squared error
on log-latency, ``subsample=1`` and a fixed ``random_state``: a deterministic fit)
    * the **piece model** ``g``: ``log ms`` of a piece measured alone, trained on every entry of
      the LUT (the LUT's statistic: median, fastest pass or fastest round median). It prices
      pieces the LUT lacks, so the learned prediction never needs a measurement;
    * the **neighbour model** ``h``: ``log(in-context ms / alone ms)`` of a piece, trained on the
      calibration networks, whose every piece was timed inside the whole network (probes after
      the stem, after every block and after the classifier) and alone, round-robin in the same
      measurement (``context_ms`` / ``pieces_ms`` of a calibration point). With fewer than
      ``min_context_rows`` such rows it is the median log-ratio (0 without any);
    * a final ``scale``: the median over calibration networks of ``measured / sum of the
      pieces' in-context predictions`` (what the probes cannot see: the network's own call).

    ``predict(spec) = scale * sum_pieces base(piece) * exp(h(piece, neighbours))`` where
    ``base`` is the LUT's entry when it has one (a measurement beats a model) and
    ``exp(g(piece))`` otherwise.

Saved with the LUT (``learned`` in the LUT JSON): the hyperparameters (``config``), the feature
names, the scikit-learn version, the row counts, the fitted scale, and ``check``: the piece
model's predictions for a few keys. The training rows are the LUT's own entries and calibration
points, already in the file, so loading **refits** deterministically (about a second) instead of
unpickling: a pickle in a JSON artefact would execute code on load and break across
scikit-learn versions, and sklearn's safe formats need extra packages (skops, skl2onnx). A
refit whose check values differ (another scikit-learn version) warns once.
"""
from __future__ import annotations

import math
import re
import statistics
import warnings
from types import SimpleNamespace
from typing import Any, Sequence

from ..arch.blocks import BLOCK_KINDS, block_kinds
from ..arch.cost import classifier_cost, ops_cost
from ..errors import InputError
from ..arch.spec import ConvOp, Stem, head_conv, stem_conv

LEARNED_FORMAT = "igcv-nas/latency-learned@1"
REGRESSOR = "sklearn.ensemble.GradientBoostingRegressor"

DEFAULT_CONFIG: dict = {
    "piece": {"n_estimators": 400, "learning_rate": 0.05, "max_depth": 4,
              "min_samples_leaf": 2, "subsample": 1.0, "random_state": 0},
    "context": {"n_estimators": 150, "learning_rate": 0.05, "max_depth": 2,
                "min_samples_leaf": 5, "subsample": 1.0, "random_state": 0},
    "min_context_rows": 30,
}

# kind codes: stem 0, head 1, then the registered block kinds in registration order (igc 2,
# igcv3 3, mbconv 4, dwsep 5, a kind registered later 6, ...); anything else one past them
KINDS = {"stem": 0, "head": 1, **{k: 2 + i for i, k in enumerate(BLOCK_KINDS)}}


def kind_code(kind: str) -> int:
    """The ``kind`` feature of a piece (see :data:`KINDS`); a kind registered after import
    (:func:`igcv_nas.arch.blocks.register_block_kind`) gets the next code."""
    code = KINDS.get(kind)
    if code is not None:
        return code
    names = block_kinds()
    return 2 + (names.index(kind) if kind in names else len(names))
ACTS = {"relu": 0, "relu6": 1, "hswish": 2, "silu": 3}
AMPS = {None: 0, "fp16": 1, "bf16": 2}

FEATURES = ("kind", "act", "residual", "res_in", "res_out", "in_chs", "out_chs", "max_chs",
            "n_convs", "max_groups", "uneven", "max_kernel", "stride", "n_shuffle", "n_gather",
            "macs", "weights", "act_elems", "bytes", "macs_per_byte", "batch", "channels_last",
            "amp")
CONTEXT_FEATURES = FEATURES + ("prev_kind", "prev_out_elems", "prev_macs", "next_kind",
                               "next_macs", "position")


class KeyFormatError(InputError):
    """A LUT key this module cannot read."""


_SETTINGS = r"r(?P<res>\d+) b(?P<batch>\d+) (?P<fmt>nchw|nhwc)(?: (?P<amp>fp16|bf16))?"
_BLOCK = re.compile(r"block (?P<kind>\w+) (?P<act>\w+) (?P<resid>res|nores) " + _SETTINGS
                    + r" \[(?P<ops>.*)\]$")
_STEM = re.compile(r"stem (?P<act>\w+) (?P<cin>\d+)>(?P<cout>\d+) k(?P<k>\d+) s(?P<s>\d+) "
                   + _SETTINGS + "$")
_HEAD = re.compile(r"head (?P<act>\w+) (?P<cin>\d+)>(?P<hc>\d+) classes(?P<cls>\d+) "
                   + _SETTINGS + "$")
_OP = re.compile(r"(?P<cin>\d+)>(?P<cout>\d+) k(?P<k>\d+) s(?P<s>\d+) g(?P<g>\S+) "
                 r"(?P<a>[al]) p(?P<p>\S+)$")


def parse_key(key: str) -> dict:
    """The piece a LUT key describes: ``kind``, ``act``, ``residual``, ``res`` (input),
    ``batch``, ``channels_last``, ``amp``, ``convs`` = [(in, out, kernel, stride, runs, perm)]
    with runs [(count, in_per_group, out_per_group)] and perm ``-`` / ``shuffleG`` / ``gather``,
    and for a head the ``classes`` and the channels entering the classifier (``features``)."""
    found = [(k, m) for k, rx in (("block", _BLOCK), ("stem", _STEM), ("head", _HEAD))
             if (m := rx.match(key))]
    if not found:
        raise KeyFormatError(f"not a latency LUT key: {key!r}")
    kind, m = found[0]
    d: dict[str, Any] = {"act": m["act"], "res": int(m["res"]), "batch": int(m["batch"]),
                         "channels_last": m["fmt"] == "nhwc", "amp": m["amp"],
                         "residual": False}
    if kind == "block":
        d["kind"], d["residual"] = m["kind"], m["resid"] == "res"
        convs = []
        for part in m["ops"].split("; "):
            o = _OP.match(part)
            if not o:
                raise KeyFormatError(f"unreadable conv {part!r} in key {key!r}")
            runs = [tuple(int(v) for v in re.split(r"[x>]", r)) for r in o["g"].split("+")]
            convs.append((int(o["cin"]), int(o["cout"]), int(o["k"]), int(o["s"]), runs, o["p"]))
        d["convs"] = convs
    elif kind == "stem":
        d["kind"] = "stem"
        d["convs"] = [_conv(stem_conv(int(m["cin"]), Stem(int(m["cout"]), int(m["k"]),
                                                            int(m["s"]))))]
    else:
        cin, op = int(m["cin"]), head_conv(int(m["cin"]), int(m["hc"]))
        d["kind"], d["classes"] = "head", int(m["cls"])
        d["convs"] = [_conv(op)] if op is not None else []
        d["features"] = op.out_chs if op is not None else cin
        d["in_chs"] = cin
    return d


def _conv(op: ConvOp) -> tuple:
    """A conv op as :func:`parse_key` lists it (no permutation: stem and head have none)."""
    return (op.in_chs, op.out_chs, op.kernel, op.stride, list(op.groups), "-")


def piece_features(key: str) -> dict[str, float]:
    """The features of one piece (module doc), as named in :data:`FEATURES`."""
    p = parse_key(key)
    b, res = p["batch"], p["res"]
    res_in = res
    macs = weights = act = 0
    n_shuffle = n_gather = 0
    max_groups = max_kernel = stride = 1
    uneven = 0
    convs = p["convs"]
    in_chs = convs[0][0] if convs else p.get("in_chs", 0)
    out_chs = max_chs = in_chs
    for cin, cout, k, s, runs, perm in convs:
        m, params, _, _, out_res = ops_cost((ConvOp(cin, cout, k, s, tuple(runs), False),), res)
        w = params - 2 * cout  # conv weights without the BN affine
        macs += m * b
        weights += w
        act += b * (cin * res * res + cout * out_res * out_res)
        max_groups = max(max_groups, sum(n for n, _, _ in runs))
        uneven = max(uneven, int(len(runs) > 1))
        max_kernel, stride = max(max_kernel, k), stride * s
        n_shuffle += perm.startswith("shuffle")
        n_gather += perm == "gather"
        if perm != "-":
            act += 2 * b * cout * out_res * out_res  # a permutation reads and writes its tensor
        res, out_chs, max_chs = out_res, cout, max(max_chs, cout)
    if p["residual"]:
        act += 2 * b * out_chs * res * res  # the add reads the held input and the output
    if p["kind"] == "head":
        f, c = p["features"], p["classes"]
        act += b * f * res * res + b * (f + c)  # pooled, then the classifier
        cls_macs, _ = classifier_cost(f, c)
        macs += b * cls_macs
        weights += cls_macs  # the classifier's weights, one per multiply-accumulate
        out_chs, max_chs, res = c, max(max_chs, c), 1
    bpe = 2 if p["amp"] else 4
    nbytes = bpe * (act + weights)
    return {"kind": kind_code(p["kind"]), "act": ACTS.get(p["act"], len(ACTS)),
            "residual": int(p["residual"]), "res_in": res_in, "res_out": res,
            "in_chs": in_chs, "out_chs": out_chs, "max_chs": max_chs, "n_convs": len(convs),
            "max_groups": max_groups, "uneven": uneven, "max_kernel": max_kernel,
            "stride": stride, "n_shuffle": n_shuffle, "n_gather": n_gather, "macs": macs,
            "weights": weights, "act_elems": act, "bytes": nbytes,
            "macs_per_byte": macs / nbytes if nbytes else 0.0, "batch": b,
            "channels_last": int(p["channels_last"]), "amp": AMPS[p["amp"]]}


def context_features(keys: Sequence[str], i: int,
                     cache: dict[str, dict] | None = None) -> dict[str, float]:
    """Features of piece ``i`` of a network whose pieces are ``keys`` (forward order): its own
    (:func:`piece_features`) and its neighbours' (-1 where there is none)."""
    def feat(k: str) -> dict:
        if cache is None:
            return piece_features(k)
        if k not in cache:
            cache[k] = piece_features(k)
        return cache[k]

    f = dict(feat(keys[i]))
    prev = feat(keys[i - 1]) if i > 0 else None
    nxt = feat(keys[i + 1]) if i + 1 < len(keys) else None
    f["prev_kind"] = prev["kind"] if prev else -1
    f["prev_out_elems"] = (prev["batch"] * prev["out_chs"] * prev["res_out"] ** 2
                           if prev else -1)
    f["prev_macs"] = prev["macs"] if prev else -1
    f["next_kind"] = nxt["kind"] if nxt else -1
    f["next_macs"] = nxt["macs"] if nxt else -1
    f["position"] = i / max(1, len(keys) - 1)
    return f


def _matrix(rows: list[dict], names: Sequence[str]):
    import numpy as np
    return np.array([[float(r[n]) for n in names] for r in rows], dtype=np.float64)


# what a table's learned-model config may ask for: these parameters control the fitting work,
# so a data file never sets them unchecked (name -> (type, lowest, highest))
CONFIG_BOUNDS: dict = {
    "n_estimators": (int, 1, 2000), "learning_rate": (float, 1e-4, 1.0),
    "max_depth": (int, 1, 12), "min_samples_leaf": (int, 1, 10_000),
    "subsample": (float, 0.01, 1.0), "random_state": (int, 0, 2**32 - 1),
}


def check_config(config: Any) -> dict:
    """A learned-model config from a LUT file (``{"piece": {...}, "context": {...},
    "min_context_rows": n}``, each part optional) checked against :data:`CONFIG_BOUNDS`;
    ValueError naming the field and what is accepted."""
    if not isinstance(config, dict):
        raise ValueError("learned.config must be an object")
    for k in config:
        if k not in DEFAULT_CONFIG:
            raise ValueError(f"learned.config.{k}: unknown; accepted: {', '.join(DEFAULT_CONFIG)}")
    for part in ("piece", "context"):
        sub = config.get(part, {})
        if not isinstance(sub, dict):
            raise ValueError(f"learned.config.{part} must be an object")
        for k, v in sub.items():
            if k not in CONFIG_BOUNDS:
                raise ValueError(f"learned.config.{part}.{k}: unknown; accepted: "
                                 f"{', '.join(CONFIG_BOUNDS)}")
            kind, lo, hi = CONFIG_BOUNDS[k]
            ok = (not isinstance(v, bool) and isinstance(v, (int, float))
                  and (kind is float or float(v).is_integer()) and math.isfinite(v)
                  and lo <= v <= hi)
            if not ok:
                raise ValueError(f"learned.config.{part}.{k} {v!r}; accepted: "
                                 f"{'an integer' if kind is int else 'a number'} from {lo:g} "
                                 f"to {hi:g}")
    m = config.get("min_context_rows", DEFAULT_CONFIG["min_context_rows"])
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= 1_000_000:
        raise ValueError(f"learned.config.min_context_rows {m!r}; accepted: an integer from 1 "
                         f"to 1,000,000")
    return config


def _regressor(params: dict):
    from sklearn.ensemble import GradientBoostingRegressor
    return GradientBoostingRegressor(loss="squared_error", **params)


def _log(ms: float) -> float:
    return math.log(max(float(ms), 1e-6))


class LearnedPredictor:
    """Piece model + neighbour model + scale (module doc), fitted on one LUT.

    Make one with :meth:`fit`; the constructor gives an unfitted predictor (no piece model, a
    constant neighbour factor of 1, scale 1).

    Args:
        config: the hyperparameters (the form of :data:`DEFAULT_CONFIG`).
        field: the entry field predicted (the LUT's statistic, e.g. ``ms``).
        entries: the LUT's entries (key -> measured fields); a piece found here is priced by its
            entry, any other by the piece model.

    Attributes:
        config: the hyperparameters.
        field: the entry field predicted.
        entries: the LUT's entries.
        piece: the fitted piece model (log ms of a piece alone); None without entries.
        context: the fitted neighbour model (log of in-context / alone); None when there were
            fewer than ``min_context_rows`` rows (then ``context_constant`` is used).
        context_constant: the constant log factor used without a neighbour model.
        scale: the whole-network scale (median of measured / predicted over calibration).
        rows: training rows of each part: ``pieces``, ``context``, ``networks``.
        n_entries: LUT entries it was fitted on.
        n_calibration: LUT calibration networks it was fitted on.
    """

    def __init__(self, config: dict, field: str, entries: dict[str, dict]):
        self.config, self.field, self.entries = config, field, entries
        self.piece = None                       # fitted g, or None without entries
        self.context = None                     # fitted h, or None (then: context_constant)
        self.context_constant = 0.0
        self.scale = 1.0
        self.rows = {"pieces": 0, "context": 0, "networks": 0}
        self.n_entries = self.n_calibration = 0
        self._cache: dict[str, dict] = {}
        self._settings = SimpleNamespace(batch=1, channels_last=False, amp=None)

    # -- fitting -------------------------------------------------------------------------------
    @classmethod
    def fit(cls, lut: Any, piece: dict | None = None, context: dict | None = None,
            min_context_rows: int | None = None) -> LearnedPredictor:
        """Fit on ``lut`` (a :class:`igcv_nas.evaluate.latency.LUT`): its entries under its
        statistic and its calibration networks. Keyword arguments override
        :data:`DEFAULT_CONFIG`."""
        cfg = {"piece": {**DEFAULT_CONFIG["piece"], **(piece or {})},
               "context": {**DEFAULT_CONFIG["context"], **(context or {})},
               "min_context_rows": int(DEFAULT_CONFIG["min_context_rows"]
                                       if min_context_rows is None else min_context_rows)}
        self = cls(cfg, lut._field(), lut.entries)
        self._settings = SimpleNamespace(batch=lut.batch, channels_last=lut.channels_last,
                                         amp=getattr(lut, "amp", None))
        self.n_entries, self.n_calibration = len(lut.entries), len(lut.calibration)
        keys = sorted(lut.entries)
        self.fit_pieces(keys, [lut.entries[k][self.field] for k in keys])
        rows, ys = [], []
        nets = [c for c in lut.calibration
                if len(c.get("keys") or ()) == len(c.get("context_ms") or ()) ==
                len(c.get("pieces_ms") or ()) > 0]
        for c in nets:
            for i, (alone, inside) in enumerate(zip(c["pieces_ms"], c["context_ms"])):
                if alone > 0 and inside > 0:
                    rows.append(context_features(c["keys"], i, self._cache))
                    ys.append(math.log(inside / alone))
        self.rows["context"] = len(rows)
        if len(rows) >= cfg["min_context_rows"]:
            self.context = _regressor(cfg["context"]).fit(_matrix(rows, CONTEXT_FEATURES), ys)
        else:
            self.context_constant = statistics.median(ys) if ys else 0.0
        ratios = []
        for c in lut.calibration:
            if c.get("measured_ms", 0) <= 0:
                continue
            if any(c is n for n in nets):
                total = sum(a * f for a, f in zip(c["pieces_ms"], self._factors(c["keys"])))
            else:  # an older point without its pieces: the plain sum stands in
                total = c.get("sum_ms", 0)
            if total > 0:
                ratios.append(c["measured_ms"] / total)
        self.scale = statistics.median(ratios) if ratios else 1.0
        self.rows["networks"] = len(ratios)
        return self

    def fit_pieces(self, keys: Sequence[str], ms: Sequence[float]) -> None:
        """Fit the piece model on ``keys`` with their latencies ``ms`` (any source: LUT
        entries, or synthetic rows in tests)."""
        self.rows["pieces"] = len(keys)
        if not keys:
            self.piece = None
            return
        X = _matrix([self._features(k) for k in keys], FEATURES)
        self.piece = _regressor(self.config["piece"]).fit(X, [_log(v) for v in ms])

    # -- predicting ----------------------------------------------------------------------------
    def _features(self, key: str) -> dict:
        if key not in self._cache:
            self._cache[key] = piece_features(key)
        return self._cache[key]

    def piece_ms(self, keys: Sequence[str]) -> list[float]:
        """The piece model's ms for each key (what it predicts for a piece measured alone)."""
        if self.piece is None:
            from .latency import LatencyError
            raise LatencyError("learned latency predictor: the LUT has no entries to learn from")
        X = _matrix([self._features(k) for k in keys], FEATURES)
        return [math.exp(v) for v in self.piece.predict(X)]

    def _factors(self, keys: Sequence[str]) -> list[float]:
        """``exp(h)`` of every piece of a network (its in-context / alone ratio)."""
        if self.context is None:
            return [math.exp(self.context_constant)] * len(keys)
        X = _matrix([context_features(keys, i, self._cache) for i in range(len(keys))],
                    CONTEXT_FEATURES)
        return [math.exp(v) for v in self.context.predict(X)]

    def min_log_factors(self, keys: Sequence[str]) -> list[float]:
        """For each piece key, the smallest ``h`` (log in-context / alone ratio) the neighbour
        model can give that piece in any network: its own features fixed, the neighbours' and
        its position free. The constant without a fitted model; else the boosted trees' initial
        value plus the learning rate times, per tree, the smallest leaf the piece can reach
        (a split on its own feature is followed as the tree would follow it, on a neighbour
        feature both ways), less 1e-9 for rounding. Exact when no tree splits on a neighbour
        feature; a lower bound otherwise (:func:`igcv_nas.evaluate.latency.min_latency_ms`)."""
        if self.context is None:
            return [self.context_constant] * len(keys)
        if not keys:
            return []
        import numpy as np
        gbr = self.context
        trees = list(gbr.estimators_[:, 0])
        zero = np.zeros((1, len(CONTEXT_FEATURES)))
        init = float(gbr.predict(zero)[0]) - gbr.learning_rate * sum(
            float(t.predict(zero)[0]) for t in trees)
        # the trees compare float32 inputs with their thresholds
        own = _matrix([self._features(k) for k in keys], FEATURES).astype(np.float32)
        n_own = len(FEATURES)
        total = np.zeros(len(keys))
        for t in trees:
            tr = t.tree_
            low: list = [None] * tr.node_count
            for node in range(tr.node_count - 1, -1, -1):  # children have larger ids
                left, right = tr.children_left[node], tr.children_right[node]
                if left == -1:
                    low[node] = np.full(len(keys), float(tr.value[node, 0, 0]))
                elif tr.feature[node] < n_own:
                    go_left = own[:, tr.feature[node]] <= tr.threshold[node]
                    low[node] = np.where(go_left, low[left], low[right])
                else:
                    low[node] = np.minimum(low[left], low[right])
            total += low[0]
        return [float(v) for v in init + gbr.learning_rate * total - 1e-9]

    def predict_keys(self, keys: Sequence[str], use_entries: bool = True) -> float:
        """Predicted ms of a network given its pieces' keys in forward order (module doc);
        ``use_entries=False`` prices every piece with the piece model."""
        keys = list(keys)
        base = [None] * len(keys)
        if use_entries:
            base = [self.entries[k][self.field] if k in self.entries else None for k in keys]
        todo = [i for i, v in enumerate(base) if v is None]
        if todo:
            for i, v in zip(todo, self.piece_ms([keys[i] for i in todo])):
                base[i] = v
        return self.scale * sum(b * f for b, f in zip(base, self._factors(keys)))

    def predict(self, spec: Any, lut: Any = None, use_entries: bool = True) -> float:
        """Predicted ms of a :class:`~igcv_nas.arch.spec.NetworkSpec` under the settings (batch,
        memory format, AMP) of ``lut`` (default: those the predictor was fitted on)."""
        from .latency import network_keys
        s = lut or self._settings
        return self.predict_keys(network_keys(spec, s.batch, s.channels_last, s.amp),
                                 use_entries)

    # -- file ----------------------------------------------------------------------------------
    def check_keys(self) -> list[str]:
        keys = sorted(self.entries)
        if len(keys) <= 5:
            return keys
        return [keys[round(i * (len(keys) - 1) / 4)] for i in range(5)]

    def to_dict(self) -> dict:
        import sklearn
        keys = self.check_keys() if self.piece is not None else []
        return {"format": LEARNED_FORMAT, "regressor": REGRESSOR, "target": "log ms",
                "config": self.config, "features": list(FEATURES),
                "context_features": list(CONTEXT_FEATURES), "sklearn": sklearn.__version__,
                "rows": dict(self.rows), "scale": self.scale,
                "context_constant": None if self.context is not None else self.context_constant,
                "check": {"entries": self.n_entries, "calibration": self.n_calibration,
                          "sklearn": sklearn.__version__, "keys": keys,
                          "piece_ms": self.piece_ms(keys) if keys else [],
                          "scale": self.scale}}

    def verify(self, check: dict) -> bool:
        """Whether this fit reproduces a saved ``check`` (same rows); warns when it does not."""
        if (check.get("entries"), check.get("calibration")) != (self.n_entries,
                                                                self.n_calibration):
            return True  # the table changed since: nothing to compare
        keys = [k for k in check.get("keys", []) if k in self.entries]
        same = (len(keys) == len(check.get("keys", [])) and
                self.piece_ms(keys) == list(check.get("piece_ms", [])) and
                self.scale == check.get("scale", self.scale))
        if not same:
            import sklearn
            warnings.warn(f"learned latency predictor: the refit differs from the saved fit "
                          f"(saved with scikit-learn {check.get('sklearn')}, this is "
                          f"{sklearn.__version__}); predictions may differ slightly",
                          RuntimeWarning, stacklevel=3)
        return same
