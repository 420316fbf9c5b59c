"""Typed experiment configs, loaded from YAML and validated on load.

A config is a tree of frozen dataclasses. :func:`from_dict` builds it from plain data and checks every key
against the dataclass fields and type hints; each dataclass may add a ``validate(path)`` method for ranges.
Every error is a :class:`ConfigError` whose message starts with the dotted key it is about, e.g.
``task.d: must be >= 1, got 0``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from unrolled.tasks.video import VideoDataConfig
from unrolled.validation import ConfigError, check

__all__ = ["ConfigError", "VideoDataConfig", "check"]  # and the config dataclasses below


# ----------------------------------------------------------------------------------------------------------
# generic machinery


def _fmt(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) < len(get_args(tp)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return True, inner
    return False, tp


def _convert(value: Any, tp: Any, path: str) -> Any:
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must not be empty (null)")
    tp = inner
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if dataclasses.is_dataclass(a)]
        if members and len(members) == len(get_args(tp)):
            return _convert_tagged(value, members, path)
        raise TypeError(f"unsupported union type at {path}: {tp}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, choices))}; got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {_fmt(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_fmt(value)}")
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {_fmt(value)}")
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {_fmt(value)}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_fmt(value)}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {_fmt(value)}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_fmt(value)}")
        key_tp, val_tp = get_args(tp)
        return {_convert(k, key_tp, f"{path}"): _convert(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    raise TypeError(f"unsupported config type at {path}: {tp}")


def _convert_tagged(value: Any, members: list[type], path: str) -> Any:
    """Pick the dataclass of a tagged union by its ``kind`` key (each member lists its kinds in KINDS)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a mapping, got {_fmt(value)}")
    kind = value.get("kind")
    if kind is None:  # a member may be the implicit default (a task without `kind` is regression)
        implicit = [cls for cls in members if getattr(cls, "IMPLICIT", False)]
        if implicit:
            return from_dict(implicit[0], value, path)
    known: list[str] = []
    for cls in members:
        kinds = cls.KINDS  # type: ignore[attr-defined]
        known.extend(kinds)
        if kind in kinds:
            return from_dict(cls, value, path)
    if kind is None:
        raise ConfigError(f"{path}.kind: missing; one of {', '.join(known)}")
    hint = difflib.get_close_matches(str(kind), known, n=1)
    more = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise ConfigError(f"{path}.kind: unknown kind {kind!r}{more}; one of {', '.join(known)}")


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from plain data, checking keys, types and (via ``validate``) ranges."""
    where = path or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {_fmt(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), list(fields), n=1)
            more = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(
                f"{_join(path, key)}: unknown key{more}; allowed keys: {', '.join(sorted(fields))}"
            )
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key_path}: missing (required)")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(path)
    return obj


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config tree, ready for YAML."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys; list items by index or by their ``name``).

    Values are parsed as YAML scalars or flow collections (``train.lr=0.003``, ``seeds=[0,1]``).
    Returns a new dict; the input is not modified.
    """
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from exc
        parts = key.strip().split(".")
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            node = _descend(node, part, ".".join(parts[: i + 1]))
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, key)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"{key}: cannot set a key inside a {type(node).__name__}")
    return data


def _descend(node: Any, part: str, path: str) -> Any:
    if isinstance(node, list):
        return node[_list_index(node, part, path)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            node[part] = {}
        return node[part]
    raise ConfigError(f"{path}: cannot descend into a {type(node).__name__}")


def _list_index(node: list[Any], part: str, path: str) -> int:
    if part.lstrip("-").isdigit():
        i = int(part)
        if not -len(node) <= i < len(node):
            raise ConfigError(f"{path}: index {i} out of range for a list of {len(node)}")
        return i
    for i, item in enumerate(node):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    names = [str(item.get("name")) for item in node if isinstance(item, dict)]
    raise ConfigError(f"{path}: no list item named {part!r}; names: {', '.join(names)}")


# ----------------------------------------------------------------------------------------------------------
# the experiment config


@dataclass(frozen=True)
class MixtureComponent:
    """One Gaussian component of a mixture distribution for the inputs x."""

    mean: float
    variance: float
    weight: float

    def validate(self, path: str) -> None:
        check(self.variance > 0, f"{path}.variance", f"must be > 0, got {self.variance}")
        check(self.weight > 0, f"{path}.weight", f"must be > 0, got {self.weight}")


@dataclass(frozen=True)
class RegressionConfig:
    """In-context linear regression (Dutta & Sra, arXiv 2410.07263; see docs/MODELS.md).

    ``covariance`` picks how x and w* are drawn:
      * ``isotropic``: x ~ N(0, I), w* ~ N(0, I).
      * ``rotated`` (the published figures): x = U D g, w* = U D⁻¹ g', D = diag(scales).
      * ``rotated_text`` (the paper's text): Σ = Uᵀ diag(scales) U, x ~ N(0, Σ), w* ~ N(0, Σ⁻¹).
      * ``mixture``: every coordinate of a token's x from the same mixture component; w* ~ N(0, I).
    ``variance`` (σ²) scales the variance of both x and w*; ``label_noise`` is the std of label noise.
    """

    KINDS: typing.ClassVar[tuple[str, ...]] = ("regression",)
    IMPLICIT: typing.ClassVar[bool] = True
    kind: Literal["regression"] = "regression"
    d: int = 5
    n: int = 20
    covariance: Literal["isotropic", "rotated", "rotated_text", "mixture"] = "rotated"
    scales: tuple[float, ...] | None = None
    variance: float = 1.0
    label_noise: float = 0.0
    mixture: tuple[MixtureComponent, ...] | None = None

    def validate(self, path: str) -> None:
        check(self.d >= 1, _join(path, "d"), f"must be >= 1, got {self.d}")
        check(self.n >= 1, _join(path, "n"), f"must be >= 1, got {self.n}")
        check(self.variance > 0, _join(path, "variance"), f"must be > 0, got {self.variance}")
        check(self.label_noise >= 0, _join(path, "label_noise"), f"must be >= 0, got {self.label_noise}")
        if self.scales is not None:
            check(
                len(self.scales) == self.d,
                _join(path, "scales"),
                f"needs d = {self.d} entries, got {len(self.scales)}",
            )
            check(all(s > 0 for s in self.scales), _join(path, "scales"), "entries must be > 0")
        elif self.covariance in ("rotated", "rotated_text"):
            check(
                self.d == 5,
                _join(path, "scales"),
                f"required for covariance {self.covariance!r} when d != 5 (the default "
                "diag(1, 1, 1/2, 1/4, 1) is the paper's, for d = 5)",
            )
        if self.covariance == "mixture":
            check(bool(self.mixture), _join(path, "mixture"), "required for covariance 'mixture'")
        else:
            check(
                self.mixture is None,
                _join(path, "mixture"),
                f"only used with covariance 'mixture', not {self.covariance!r}",
            )

    @property
    def resolved_scales(self) -> tuple[float, ...]:
        """The diagonal D of the rotated families (the published figures' default for d = 5)."""
        if self.scales is not None:
            return self.scales
        return (1.0, 1.0, 0.5, 0.25, 1.0)


ATTENTION_FORMS = Literal["reassociated", "direct"]


@dataclass(frozen=True)
class ConstraintConfig:
    """Layerwise descent constraints E[f_l] ≤ (1 − α_l) E[f_{l−1}] and their dual ascent.

    ``alpha`` is one α for every layer; ``alphas`` (one per layer) overrides it. ``dual_lr`` is η_λ;
    ``resilient_rho`` (> 1) switches to resilient ascent λ ← [(1 − 1/ρ) λ + η_λ s]_+. The dual step runs every
    ``dual_every`` primal steps on the mean slack of the training batches since the last one
    (``dual_source: train``) or on a held-out constraint batch of ``heldout_size`` problems (``heldout``).
    ``detach_previous`` stops gradients through f_{l−1} in the slack (default; see
    :mod:`unrolled.constrained.descent` for why).
    """

    alpha: float = 0.1
    alphas: tuple[float, ...] | None = None
    detach_previous: bool = True
    dual_lr: float = 0.1
    resilient_rho: float | None = None
    dual_every: int = 1
    dual_source: Literal["train", "heldout"] = "train"
    heldout_size: int = 1000

    def validate(self, path: str) -> None:
        check(0 <= self.alpha < 1, _join(path, "alpha"), f"must be in [0, 1), got {self.alpha}")
        if self.alphas is not None:
            check(len(self.alphas) > 0, _join(path, "alphas"), "must not be empty")
            check(all(0 <= a < 1 for a in self.alphas), _join(path, "alphas"), "entries must be in [0, 1)")
        check(self.dual_lr > 0, _join(path, "dual_lr"), f"must be > 0, got {self.dual_lr}")
        if self.resilient_rho is not None:
            check(
                self.resilient_rho > 1, _join(path, "resilient_rho"), f"must be > 1, got {self.resilient_rho}"
            )
        check(self.dual_every >= 1, _join(path, "dual_every"), f"must be >= 1, got {self.dual_every}")
        check(self.heldout_size >= 1, _join(path, "heldout_size"), f"must be >= 1, got {self.heldout_size}")

    def alpha_for(self, depth: int) -> float | tuple[float, ...]:
        """α for a model of ``depth`` layers (the per-layer list must match it)."""
        if self.alphas is None:
            return self.alpha
        if len(self.alphas) != depth:
            raise ConfigError(
                f"constraints.alphas: has {len(self.alphas)} entries, the model has {depth} layers"
            )
        return self.alphas


@dataclass(frozen=True)
class LearnedMethod:
    """A trained in-context solver: the linear transformer or one of the Memformers.

    kinds:
      * ``linear_transformer``: Ahn et al.; Z ← Z + attn_l(Z).
      * ``memformer_cgd``: CGD-like memory, R_l = attn_l(Z_l) + γ_l R_{l-1}, Z ← Z + α_l R_l.
      * ``memformer_lfom``: LFOM memory, Z ← Z + Σ_{j≤l} Γ_j ⊙ attn_j(Z_j).
      * ``memformer_lfom_plus``: Z ← Z + attn_l(Z_l) + Σ_{j<l} Γ_j ⊙ attn_j(Z_j) (GD++/NAG variant).
      * ``memformer_recurrent``: R ← β_l R + γ_l Σ_h attn_{l,h}(Z), Z ← Z + α_l R, A_l = a_l I.
      * ``lfom``: a learnable linear first-order method without a transformer (depth = its steps),
        w_{k+1} = w_k − Σ_{i≤k} Γ_i ⊙ g_i (``lfom_form: tied``) or with per-step weights Γ^k_i
        (``full``); Γ starts at ``gamma_init`` (full: GD with step ``gamma_init``); gradients of
        (1/2n)‖Xw − y‖² (``lfom_objective: mean``) or ½‖Xw − y‖² (``sum``).

    ``constraints`` trains the model under layerwise descent constraints (primal-dual) instead of ERM.
    ``batch_size`` overrides ``train.batch_size`` for this method (e.g. to compare training batch sizes).
    """

    KINDS: typing.ClassVar[tuple[str, ...]] = (
        "linear_transformer",
        "memformer_cgd",
        "memformer_lfom",
        "memformer_lfom_plus",
        "memformer_recurrent",
        "lfom",
    )
    name: str
    kind: str
    A: Literal["full", "scalar", "fixed"] = "full"
    B: Literal["zero", "free"] = "zero"
    heads: int = 1
    init_std: float = 0.1
    fixed_scale: float = 1.0
    gamma_init: float = 0.0
    attention: ATTENTION_FORMS = "reassociated"
    lfom_form: Literal["tied", "full"] = "tied"
    lfom_objective: Literal["mean", "sum"] = "mean"
    batch_size: int | None = None
    constraints: ConstraintConfig | None = None
    label: str | None = None

    def validate(self, path: str) -> None:
        check(self.heads >= 1, _join(path, "heads"), f"must be >= 1, got {self.heads}")
        if self.batch_size is not None:
            check(self.batch_size >= 1, _join(path, "batch_size"), f"must be >= 1, got {self.batch_size}")
        check(self.init_std >= 0, _join(path, "init_std"), f"must be >= 0, got {self.init_std}")
        if self.kind == "memformer_recurrent":
            check(self.A == "scalar", _join(path, "A"), "memformer_recurrent uses A_l = a_l I: set A: scalar")


@dataclass(frozen=True)
class MixtureMethod:
    """A mixture of Memformer experts with test-time adaptation (Dutta & Sra, Sec. 5; docs/MODELS.md).

    One expert per entry of ``expert_variances``, each trained (with ``train``) on the task scaled to that
    variance σ²; the experts are ``expert_kind`` models with ``A``, ``B``, ``heads`` as in
    :class:`LearnedMethod` (P and Q free by default, own Γ per expert). For every evaluated distribution
    (the task itself and each ``eval.shifts`` entry) the experts are frozen and the ``gate`` (``linear``,
    as the published code, or ``softmax``, as the paper's text) is fit — alone, or with the experts' Γ
    (``adapt: gates_and_gamma``) — for ``adapt_steps`` Adam steps at ``adapt_lr`` on one batch of
    ``adapt_size`` prompts from that distribution; the mixture is then scored on that batch (in-sample)
    and on fresh prompts of the same distribution.
    """

    KINDS: typing.ClassVar[tuple[str, ...]] = ("mixture",)
    name: str
    kind: Literal["mixture"] = "mixture"
    expert_kind: Literal["memformer_lfom", "memformer_lfom_plus", "memformer_cgd", "linear_transformer"] = (
        "memformer_lfom"
    )
    A: Literal["full", "scalar", "fixed"] = "full"
    B: Literal["zero", "free"] = "free"
    heads: int = 1
    init_std: float = 0.1
    gamma_init: float = 0.0
    expert_variances: tuple[float, ...] = (1.0, 2.0, 3.0)
    gate: Literal["linear", "softmax"] = "linear"
    gate_init: float = 0.0
    adapt: Literal["gates", "gates_and_gamma"] = "gates"
    adapt_steps: int = 500
    adapt_lr: float = 0.01
    adapt_size: int = 1000
    label: str | None = None

    def validate(self, path: str) -> None:
        check(len(self.expert_variances) >= 1, _join(path, "expert_variances"), "needs at least one expert")
        check(
            all(v > 0 for v in self.expert_variances), _join(path, "expert_variances"), "entries must be > 0"
        )
        check(self.heads >= 1, _join(path, "heads"), f"must be >= 1, got {self.heads}")
        for key in ("adapt_steps", "adapt_size"):
            check(getattr(self, key) >= 1, _join(path, key), f"must be >= 1, got {getattr(self, key)}")
        check(self.adapt_lr > 0, _join(path, "adapt_lr"), f"must be > 0, got {self.adapt_lr}")
        if self.adapt == "gates_and_gamma":
            check(
                self.expert_kind in ("memformer_lfom", "memformer_lfom_plus"),
                _join(path, "adapt"),
                f"gates_and_gamma adapts the LFOM masks Γ; {self.expert_kind!r} has none",
            )

    def expert(self, variance: float) -> LearnedMethod:
        """The :class:`LearnedMethod` of the expert for ``variance``."""
        return LearnedMethod(
            name=f"{self.name}_expert_var{variance:g}",
            kind=self.expert_kind,
            A=self.A,
            B=self.B,
            heads=self.heads,
            init_std=self.init_std,
            gamma_init=self.gamma_init,
        )


@dataclass(frozen=True)
class ClassicalMethod:
    """A classical first-order method run per prompt (batched).

    ``objective`` sets the gradient's scale: ``sum`` is ∇ ½‖Xw − y‖² (the published baselines' step sizes
    refer to it), ``mean`` is ∇ (1/2n)‖Xw − y‖² (the scale of Ahn et al.'s Lemma 1). With ``tune: true``
    the step size (and momentum, unless ``momentum`` fixes it) is chosen per depth on validation prompts from
    ``lr_grid`` (default: 40 log-spaced multiples of 1/λ_max(H)) and ``momentum_grid`` (default 0 … 0.95).
    ``preconditioner: inverse_covariance`` gives GD the task's true Σ_x⁻¹ (an oracle baseline).
    """

    KINDS: typing.ClassVar[tuple[str, ...]] = ("gd", "momentum", "nesterov", "cg")
    name: str
    kind: str
    lr: float | None = None
    momentum: float | None = None
    objective: Literal["sum", "mean"] = "sum"
    preconditioner: Literal["identity", "inverse_covariance"] = "identity"
    tune: bool = False
    lr_grid: tuple[float, ...] | None = None
    momentum_grid: tuple[float, ...] | None = None
    label: str | None = None

    def validate(self, path: str) -> None:
        has_lr = self.kind in ("gd", "momentum", "nesterov")
        has_mom = self.kind in ("momentum", "nesterov")
        if self.kind == "cg":
            for key in ("lr", "momentum", "lr_grid", "momentum_grid"):
                check(getattr(self, key) is None, _join(path, key), "conjugate gradient has no step size")
            check(not self.tune, _join(path, "tune"), "conjugate gradient has nothing to tune")
        if has_lr and not self.tune:
            check(self.lr is not None, _join(path, "lr"), f"required for {self.kind} unless tune: true")
        if self.tune:
            check(
                self.lr is None,
                _join(path, "lr"),
                "not used with tune: true (set lr_grid to choose candidates)",
            )
            check(
                self.momentum is None or self.momentum_grid is None,
                _join(path, "momentum"),
                "give a fixed momentum or a momentum_grid, not both",
            )
        if self.lr is not None:
            check(self.lr > 0, _join(path, "lr"), f"must be > 0, got {self.lr}")
        if has_mom and not self.tune:
            check(self.momentum is not None, _join(path, "momentum"), f"required for {self.kind}")
        if not has_mom:
            check(self.momentum is None, _join(path, "momentum"), f"{self.kind} has no momentum")
            check(self.momentum_grid is None, _join(path, "momentum_grid"), f"{self.kind} has no momentum")
        if self.momentum is not None:
            check(0 <= self.momentum < 1, _join(path, "momentum"), f"must be in [0, 1), got {self.momentum}")
        if self.preconditioner != "identity":
            check(self.kind == "gd", _join(path, "preconditioner"), "only gd takes a preconditioner")
        for key in ("lr_grid", "momentum_grid"):
            grid = getattr(self, key)
            if grid is not None:
                check(len(grid) > 0, _join(path, key), "must not be empty")
                check(self.tune, _join(path, key), "only used with tune: true")


@dataclass(frozen=True)
class DenoiserMethod:
    """A video denoiser: space-time patch tokens, a backbone, and a shared linear patch decoder as readout.

    kinds: ``ut`` (the unrolled transformer, untied layers Φ_l = σ(W_l Z_l + U_l X_{l−1})) or ``vit``
    (pre-norm transformer blocks). ``patch`` is (frames, rows, columns) per token. ``activation``, ``norm``
    and ``init`` apply to the UT, ``mlp_ratio`` to the ViT. ``constraints`` trains under layerwise descent
    constraints (primal-dual) instead of ERM.
    """

    KINDS: typing.ClassVar[tuple[str, ...]] = ("ut", "vit")
    name: str
    kind: str
    width: int = 64
    depth: int = 6
    heads: int = 4
    patch: tuple[int, int, int] = (2, 8, 8)
    activation: Literal["gelu", "relu", "tanh", "identity"] = "relu"
    norm: Literal["none", "layer"] = "layer"
    init: Literal["identity", "normal"] = "identity"
    init_std: float = 0.02
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    constraints: ConstraintConfig | None = None
    label: str | None = None

    def validate(self, path: str) -> None:
        for key in ("width", "depth", "heads"):
            check(getattr(self, key) >= 1, _join(path, key), f"must be >= 1, got {getattr(self, key)}")
        check(self.width % self.heads == 0, _join(path, "heads"), f"must divide width {self.width}")
        check(len(self.patch) == 3, _join(path, "patch"), "needs 3 entries (frames, rows, columns)")
        check(all(p >= 1 for p in self.patch), _join(path, "patch"), "entries must be >= 1")
        check(0 <= self.dropout < 1, _join(path, "dropout"), f"must be in [0, 1), got {self.dropout}")
        check(self.init_std >= 0, _join(path, "init_std"), f"must be >= 0, got {self.init_std}")


@dataclass(frozen=True)
class PerturbationConfig:
    """Input noise of the denoising task: x̃ = x + ε, ε ~ N(μ, (γ σ)²) (or NEFTune-scaled uniform noise).

    σ is the training clips' pixel standard deviation, measured once. Training uses ``train_gamma``; the
    robustness sweep evaluates at every ``test_gammas`` level (the paper's grid by default). ``target:
    embedding`` perturbs the patch embedding Φ_0 instead of the input clip (σ: the embedding batch's own std;
    at train time through a forward hook whose random stream is not checkpointed, so only ``input`` runs
    resume bit for bit).
    """

    kind: Literal["gaussian", "uniform"] = "gaussian"
    train_gamma: float = 0.25
    mean: float = 0.0
    target: Literal["input", "embedding"] = "input"
    test_gammas: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0, 1.5)

    def validate(self, path: str) -> None:
        check(self.train_gamma >= 0, _join(path, "train_gamma"), f"must be >= 0, got {self.train_gamma}")
        check(len(self.test_gammas) > 0, _join(path, "test_gammas"), "must not be empty")
        check(all(g >= 0 for g in self.test_gammas), _join(path, "test_gammas"), "entries must be >= 0")


MethodConfig = LearnedMethod | MixtureMethod | ClassicalMethod | DenoiserMethod


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule: constant, step (×``factor`` every ``every`` steps) or cosine to 0."""

    kind: Literal["constant", "step", "cosine"] = "constant"
    every: int = 4000
    factor: float = 0.5

    def validate(self, path: str) -> None:
        check(self.every >= 1, _join(path, "every"), f"must be >= 1, got {self.every}")
        check(0 < self.factor <= 1, _join(path, "factor"), f"must be in (0, 1], got {self.factor}")


@dataclass(frozen=True)
class TrainConfig:
    """How learned solvers are fit.

    ``protocol``:
      * ``online`` (default): a fresh batch of ``batch_size`` prompts every ``resample_every`` steps.
      * ``fixed_batch``: one batch of ``batch_size`` prompts drawn once and used for every step (the
        protocol that produced the published Memformer figures).
    ``clip`` bounds the gradient norm of each parameter tensor separately (per matrix), as in the paper.
    """

    protocol: Literal["online", "fixed_batch"] = "online"
    steps: int = 1000
    batch_size: int = 1000
    resample_every: int = 1
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    clip: float | None = None
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    log_every: int = 10
    checkpoint_every: int = 200

    def validate(self, path: str) -> None:
        for key in ("steps", "batch_size", "resample_every", "log_every", "checkpoint_every"):
            value = getattr(self, key)
            check(value >= 1, _join(path, key), f"must be >= 1, got {value}")
        check(self.lr > 0, _join(path, "lr"), f"must be > 0, got {self.lr}")
        check(len(self.betas) == 2, _join(path, "betas"), f"needs 2 entries, got {len(self.betas)}")
        check(all(0 <= b < 1 for b in self.betas), _join(path, "betas"), "entries must be in [0, 1)")
        check(self.weight_decay >= 0, _join(path, "weight_decay"), "must be >= 0")
        if self.clip is not None:
            check(self.clip > 0, _join(path, "clip"), f"must be > 0, got {self.clip}")


@dataclass(frozen=True)
class ShiftConfig:
    """A test distribution other than the training task: the task with some fields replaced.

    E.g. ``{name: var2.5, variance: 2.5}`` (the variance shift) or ``{name: gmm, covariance: mixture,
    mixture: [...]}``. Unset fields keep the task's value; the result is validated like a task.
    """

    name: str
    variance: float | None = None
    covariance: Literal["isotropic", "rotated", "rotated_text", "mixture"] | None = None
    scales: tuple[float, ...] | None = None
    mixture: tuple[MixtureComponent, ...] | None = None
    label_noise: float | None = None

    def validate(self, path: str) -> None:
        check(bool(self.name), _join(path, "name"), "must not be empty")
        check(":" not in self.name, _join(path, "name"), f"must not contain ':', got {self.name!r}")

    def apply(self, task: RegressionConfig, path: str = "") -> RegressionConfig:
        """The shifted task (validated; errors name ``path``)."""
        data = to_dict(task)
        for key in ("variance", "covariance", "scales", "mixture", "label_noise"):
            value = getattr(self, key)
            if value is not None:
                data[key] = to_dict(value)
        if self.covariance is not None and self.covariance != "mixture" and self.mixture is None:
            data["mixture"] = None
        return from_dict(RegressionConfig, data, path)


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation: ``batch_size`` fresh held-out prompts per seed (the same prompts for every method).

    ``in_sample: true`` evaluates on the training batch instead (fixed_batch protocol only) and labels
    every number as in-sample. ``validation_size`` prompts (separate from test) tune classical baselines.
    ``shifts`` are further test distributions (out of distribution): every method, trained on the task,
    is also scored on ``batch_size`` fresh prompts of each.
    """

    batch_size: int = 1000
    in_sample: bool = False
    validation_size: int = 1000
    shifts: tuple[ShiftConfig, ...] = ()

    def validate(self, path: str) -> None:
        check(self.batch_size >= 1, _join(path, "batch_size"), f"must be >= 1, got {self.batch_size}")
        check(self.validation_size >= 1, _join(path, "validation_size"), "must be >= 1")
        names = [s.name for s in self.shifts]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, _join(path, "shifts"), f"duplicate shift names: {', '.join(dup)}")


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: a task, the methods to compare, seeds, depths, training and evaluation."""

    name: str
    task: RegressionConfig | VideoDataConfig
    methods: tuple[MethodConfig, ...]
    description: str = ""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    depths: tuple[int, ...] = (1, 2, 3, 4)
    dtype: Literal["float32", "float64"] = "float32"
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    perturbation: PerturbationConfig = field(default_factory=PerturbationConfig)
    published: dict[str, tuple[float, ...]] | None = None
    published_gammas: tuple[float, ...] | None = None
    published_source: str = ""

    def validate(self, path: str) -> None:
        check(len(self.methods) > 0, "methods", "needs at least one method")
        video = self.task.kind == "video"
        for i, m in enumerate(self.methods):
            ok = isinstance(m, DenoiserMethod) if video else not isinstance(m, DenoiserMethod)
            task = "video denoising" if video else "in-context regression"
            check(ok, f"methods[{i}].kind", f"{m.kind!r} is not a method of the {task} task")
        names = [m.name for m in self.methods]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "methods", f"duplicate method names: {', '.join(dup)}")
        check(len(self.seeds) > 0, "seeds", "needs at least one seed")
        check(len(set(self.seeds)) == len(self.seeds), "seeds", "must be distinct")
        check(len(self.depths) > 0, "depths", "needs at least one depth (no layers)")
        for i, L in enumerate(self.depths):
            check(L >= 1, f"depths[{i}]", f"must be >= 1 (a model needs layers), got {L}")
        check(len(set(self.depths)) == len(self.depths), "depths", "must be distinct")
        if self.eval.in_sample:
            check(
                self.train.protocol == "fixed_batch",
                "eval.in_sample",
                "in-sample evaluation needs train.protocol: fixed_batch (online training has no single "
                "training batch)",
            )
        if self.published is not None:
            points = self.published_gammas if video else self.depths
            what = "published_gammas entry" if video else "depth"
            if video:
                check(self.published_gammas is not None, "published_gammas", "required with published")
            assert points is not None
            for key, values in self.published.items():
                check(key in names, f"published.{key}", f"no method named {key!r}")
                check(
                    len(values) == len(points),
                    f"published.{key}",
                    f"needs one value per {what} ({len(points)}), got {len(values)}",
                )
        if self.eval.shifts:
            check(not video, "eval.shifts", "only in-context regression has distribution shifts")
            for i, shift in enumerate(self.eval.shifts):
                shift.apply(self.task, f"eval.shifts[{i}]")  # type: ignore[arg-type]
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"device: expected 'cpu' or 'cuda[:N]', got {self.device!r}")

    @property
    def max_depth(self) -> int:
        return max(self.depths)

    def shifted_tasks(self) -> dict[str, RegressionConfig]:
        """The task of every ``eval.shifts`` entry, by name."""
        assert isinstance(self.task, RegressionConfig)
        return {s.name: s.apply(self.task, f"eval.shifts.{s.name}") for s in self.eval.shifts}

    def method(self, name: str) -> MethodConfig:
        for m in self.methods:
            if m.name == name:
                return m
        raise KeyError(name)


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load and validate an experiment config from YAML, applying ``key=value`` overrides first."""
    data = apply_overrides(load_yaml(path), overrides)
    return from_dict(ExperimentConfig, data)


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
