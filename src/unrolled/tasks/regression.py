"""In-context linear regression (Dutta & Sra, arXiv 2410.07263; Ahn et al. 2023), batched and seeded.

A prompt holds n context pairs (x_i, y_i = <x_i, w*>) and one query x_q. As tokens (rows) it is
``Z_0 = [[x_1, y_1], ..., [x_n, y_n], [x_q, 0]]`` of shape ``[n + 1, d + 1]``: query last, its label slot zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor

from unrolled.config import ConfigModel, Float, Int
from unrolled.seeding import derive_seed
from unrolled.validation import check

Covariance = Literal["isotropic", "rotated", "rotated_text", "skewed", "mixture"]
Positive = Annotated[Float, Field(gt=0)]


class MixtureComponent(ConfigModel):
    """One Gaussian component of a mixture distribution for the inputs x."""

    mean: Float
    variance: Positive
    weight: Positive


class RegressionConfig(ConfigModel):
    """In-context linear regression (Dutta & Sra, arXiv 2410.07263; see docs/MODELS.md).

    ``covariance`` picks how x and w* are drawn:
      * ``isotropic``: x ~ N(0, I), w* ~ N(0, I).
      * ``rotated`` (the published figures): x = U D g, w* = U D⁻¹ g', D = diag(scales).
      * ``rotated_text`` (the paper's text): Σ = Uᵀ diag(scales) U, x ~ N(0, Σ), w* ~ N(0, Σ⁻¹).
      * ``skewed`` (Garg et al. 2022's skewed-covariance shift): x = g T with T = U diag(s) Uᵀ scaled so that
        E‖x‖² = d, s_i = (i + 1)^(−``skew``) (or ``scales``), w* ~ N(0, I). ``skew: 1`` is Garg's; 0 is isotropic.
      * ``mixture``: every coordinate of a token's x from the same mixture component; w* ~ N(0, I).
    ``variance`` (σ²) scales the variance of both x and w*; ``label_noise`` is the std of label noise.
    ``sparsity``: k, w* keeps k coordinates drawn at random per prompt and zeroes the rest (Garg et al.'s sparse
    regression; the families whose w* ~ N(0, I) only).
    """

    kind: Literal["regression"] = "regression"
    d: Annotated[Int, Field(ge=1)] = 5
    n: Annotated[Int, Field(ge=1)] = 20
    covariance: Covariance = "rotated"
    scales: tuple[Positive, ...] | None = None
    variance: Positive = 1.0
    label_noise: Annotated[Float, Field(ge=0)] = 0.0
    mixture: Annotated[tuple[MixtureComponent, ...], Field(min_length=1)] | None = None
    skew: Annotated[Float, Field(ge=0)] = 1.0
    sparsity: Annotated[Int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> RegressionConfig:
        if self.sparsity is not None:
            check(self.sparsity <= self.d, "sparsity", f"must be <= d = {self.d}, got {self.sparsity}")
            check(
                self.covariance not in ("rotated", "rotated_text"),
                "sparsity",
                f"sparse w* needs a family with w* ~ N(0, I), not covariance {self.covariance!r}",
            )
        if self.scales is not None:
            check(len(self.scales) == self.d, "scales", f"needs d = {self.d} entries, got {len(self.scales)}")
        elif self.covariance in ("rotated", "rotated_text"):
            check(
                self.d == 5,
                "scales",
                f"required for covariance {self.covariance!r} when d != 5 (the default "
                "diag(1, 1, 1/2, 1/4, 1) is the paper's, for d = 5)",
            )
        if self.covariance == "mixture":
            check(bool(self.mixture), "mixture", "required for covariance 'mixture'")
        else:
            check(
                self.mixture is None,
                "mixture",
                f"only used with covariance 'mixture', not {self.covariance!r}",
            )
        return self

    @property
    def resolved_scales(self) -> tuple[float, ...]:
        """The diagonal D of the rotated families (the published figures' default for d = 5), or the
        eigenvalues s of the skewed family's transform (i + 1)^(−skew)."""
        if self.scales is not None:
            return self.scales
        if self.covariance == "skewed":
            return tuple(float((i + 1) ** -self.skew) for i in range(self.d))
        return (1.0, 1.0, 0.5, 0.25, 1.0)


@dataclass(frozen=True)
class RegressionBatch:
    """A batch of B prompts.

    Attributes:
        X: context inputs ``[B, n, d]``.
        y: context labels ``[B, n]``.
        x_query: query inputs ``[B, d]``.
        y_query: query targets ``[B]`` (with label noise when the task has some).
        w_star: the regression vectors ``[B, d]``.
    """

    X: Tensor
    y: Tensor
    x_query: Tensor
    y_query: Tensor
    w_star: Tensor

    @property
    def batch_size(self) -> int:
        return self.X.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[1]

    @property
    def d(self) -> int:
        return self.X.shape[2]

    def tokens(self) -> Tensor:
        """The prompt as tokens ``[B, n + 1, d + 1]``: rows ``[x_i, y_i]``, query row ``[x_q, 0]`` last."""
        context = torch.cat([self.X, self.y.unsqueeze(-1)], dim=-1)
        query = torch.cat([self.x_query, torch.zeros_like(self.x_query[:, :1])], dim=-1)
        return torch.cat([context, query.unsqueeze(1)], dim=1)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> RegressionBatch:
        """Move every tensor to ``device`` / ``dtype``."""
        return RegressionBatch(*(t.to(device=device, dtype=dtype) for t in self.astuple()))

    def astuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return (self.X, self.y, self.x_query, self.y_query, self.w_star)

    def state_dict(self) -> dict[str, Tensor]:
        return {
            "X": self.X,
            "y": self.y,
            "x_query": self.x_query,
            "y_query": self.y_query,
            "w_star": self.w_star,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> RegressionBatch:
        return cls(state["X"], state["y"], state["x_query"], state["y_query"], state["w_star"])


def random_rotation(d: int, seed: int) -> Tensor:
    """U: left singular vectors of a uniform[-1, 1]^{d×d} matrix drawn from ``seed`` (float64 ``[d, d]``)."""
    g = torch.Generator().manual_seed(seed)
    M = torch.rand(d, d, generator=g, dtype=torch.float64) * 2 - 1
    U, _, _ = torch.linalg.svd(M)
    return U


class RegressionTask:
    """Samples in-context regression prompts for one seed (the seed fixes the rotation U).

    Args:
        config: the task's :class:`RegressionConfig`.
        seed: fixes U for the rotated families (each seed its own U, as in the published figures).
    """

    def __init__(self, config: RegressionConfig, seed: int = 0) -> None:
        self.config = config
        self.seed = seed
        d = config.d
        scales = torch.tensor(config.resolved_scales, dtype=torch.float64)
        self._x_map: Tensor | None = None  # x = g @ x_map, g ~ N(0, I)   [d, d]
        self._w_map: Tensor | None = None  # w* = g' @ w_map               [d, d]
        if config.covariance == "rotated":
            # x = U D g, w* = U D^{-1} g'  (row vectors: g @ D U^T)
            U = random_rotation(d, derive_seed(seed, "rotation"))
            self._x_map = torch.diag(scales) @ U.T
            self._w_map = torch.diag(1 / scales) @ U.T
        elif config.covariance == "rotated_text":
            # Σ = U^T diag(s) U: x = U^T diag(s)^{1/2} g, w* = U^T diag(s)^{-1/2} g'
            U = random_rotation(d, derive_seed(seed, "rotation"))
            self._x_map = torch.diag(scales.sqrt()) @ U
            self._w_map = torch.diag(scales.rsqrt()) @ U
        elif config.covariance == "skewed":
            # Garg et al.'s sample_transformation(normalize=True): T = U diag(s) Uᵀ · √(d / Σ s²), w* ~ N(0, I)
            U = random_rotation(d, derive_seed(seed, "rotation"))
            self._x_map = U @ torch.diag(scales) @ U.T * math.sqrt(d / float((scales**2).sum()))

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def n(self) -> int:
        return self.config.n

    def input_second_moment(self) -> Tensor:
        """E[x xᵀ] of one input (float64 ``[d, d]``, variance scale included): Σ_x for the Gaussian families."""
        cfg = self.config
        if self._x_map is not None:
            cov = self._x_map.T @ self._x_map
        elif cfg.covariance == "mixture":
            assert cfg.mixture is not None
            w = torch.tensor([c.weight for c in cfg.mixture], dtype=torch.float64)
            w = w / w.sum()
            mu = torch.tensor([c.mean for c in cfg.mixture], dtype=torch.float64)
            var = torch.tensor([c.variance for c in cfg.mixture], dtype=torch.float64)
            mean = (w * mu).sum()
            # same component for every coordinate of a token: coordinates share the mean's spread
            within = (w * var).sum()
            between = (w * (mu - mean) ** 2).sum()
            cov = within * torch.eye(cfg.d, dtype=torch.float64) + between * torch.ones(cfg.d, cfg.d)
            cov = cov + mean**2 * torch.ones(cfg.d, cfg.d, dtype=torch.float64)  # second moment
        else:
            cov = torch.eye(cfg.d, dtype=torch.float64)
        return cov * cfg.variance

    def sample(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        n: int | None = None,
        active_dims: int | None = None,
    ) -> RegressionBatch:
        """Draw ``batch_size`` prompts: a :class:`RegressionBatch` with ``X [B, n, d]`` etc.

        Sampling is done in float64 on the CPU from ``generator`` (so a seed gives the same prompts on
        every device and dtype), then cast.

        Args:
            n: context pairs per prompt (default: the config's ``n``).
            active_dims: Garg et al.'s dimension curriculum: the coordinates of x from ``active_dims`` on are
                zeroed before the labels are computed (default: all d are active).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        cfg = self.config
        B, n, d = batch_size, cfg.n if n is None else n, cfg.d
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if active_dims is not None and not 1 <= active_dims <= d:
            raise ValueError(f"active_dims must be in [1, d = {d}], got {active_dims}")
        f64 = torch.float64
        g = torch.randn(B, n + 1, d, generator=generator, dtype=f64)
        gw = torch.randn(B, d, generator=generator, dtype=f64)
        if cfg.covariance == "mixture":
            assert cfg.mixture is not None
            weights = torch.tensor([c.weight for c in cfg.mixture], dtype=f64)
            comp = torch.multinomial(
                weights / weights.sum(), B * (n + 1), replacement=True, generator=generator
            )
            comp = comp.view(B, n + 1, 1)
            mu = torch.tensor([c.mean for c in cfg.mixture], dtype=f64)[comp]
            sd = torch.tensor([math.sqrt(c.variance) for c in cfg.mixture], dtype=f64)[comp]
            x = mu + sd * g
            w = gw
        elif self._x_map is not None:
            x = g @ self._x_map
            w = gw if self._w_map is None else gw @ self._w_map
        else:
            x, w = g, gw
        scale = math.sqrt(cfg.variance)
        x, w = x * scale, w * scale
        if cfg.sparsity is not None:  # k coordinates of w* kept, chosen per prompt
            keep = torch.rand(B, d, generator=generator, dtype=f64).argsort(dim=1)[:, : cfg.sparsity]
            w = w * torch.zeros(B, d, dtype=f64).scatter_(1, keep, 1.0)
        if active_dims is not None and active_dims < d:
            x = x.clone()
            x[..., active_dims:] = 0
        y = torch.einsum("bnd,bd->bn", x, w)
        if cfg.label_noise > 0:
            y = y + cfg.label_noise * torch.randn(B, n + 1, generator=generator, dtype=f64)
        batch = RegressionBatch(X=x[:, :n], y=y[:, :n], x_query=x[:, n], y_query=y[:, n], w_star=w)
        return batch.to(device=device, dtype=dtype)

    def weight_covariance(self) -> Tensor:
        """E[w* w*ᵀ] (float64 ``[d, d]``, variance scale included): the Gaussian prior of the Bayes predictor.

        Raises:
            ValueError: for sparse w* (not Gaussian; Lasso is the baseline there).
        """
        cfg = self.config
        if cfg.sparsity is not None:
            raise ValueError("sparse w* has no Gaussian prior: the Bayes predictor is not ridge here")
        cov = torch.eye(cfg.d, dtype=torch.float64)
        if self._w_map is not None:
            cov = self._w_map.T @ self._w_map
        return cov * cfg.variance

    def zero_predictor_loss(self) -> float:
        """E[y_q²]: the loss of always predicting 0 (d·σ⁴ for the Gaussian families, plus noise)."""
        cfg = self.config
        if cfg.sparsity is not None:
            return float(cfg.variance * torch.trace(self.input_second_moment())) * cfg.sparsity / cfg.d + (
                cfg.label_noise**2
            )
        if cfg.covariance in ("mixture", "skewed"):
            # E[(x·w)^2] = E[x^T E[w w^T] x] = σ² E‖x‖² with w ~ N(0, σ² I)
            return float(cfg.variance * torch.trace(self.input_second_moment())) + cfg.label_noise**2
        return cfg.d * cfg.variance**2 + cfg.label_noise**2
