"""Softmax transformers as in-context learners: a GPT-2 as Garg et al. build it, and the Unrolled Transformer.

A prompt is N pairs (x_i, y_i). Both learners read it as 2N tokens, x and y interleaved, y written as
``[y, 0, …, 0]`` (Garg, Tsipras, Liang & Valiant 2022, dtsip/in-context-learning), and predict every y_i
from the tokens before it (causal attention), so one prompt gives N predictions, the i-th from i examples:

    tokens  z = (x_1, ỹ_1, x_2, ỹ_2, …, x_N, ỹ_N)                         [B, 2N, d]
    state 0 h_0 = read_in(z) + p                                         [B, 2N, D]   (p: learned positions)
    state l h_l = block_l(h_{l−1})                                        [B, 2N, D]
    readout ŷ(h) = read_out(norm(h))[:, 0::2]                             [B, N]       (at the x tokens)

The readout is shared by every layer: the final norm of the backbone and the linear read-out, which is what
the last layer's prediction already goes through (GPT-2's ``ln_f`` then Garg's ``_read_out``). Reading an
intermediate layer with it is the logit lens of language models; a linear *probe* fitted per layer (Fu et al.
2023's reading) is :func:`unrolled.icl.layers.fit_probes`. States are the residual stream *before* the final
norm, so state L read out is exactly the model's prediction.

* :class:`GPT2Learner`: the backbone is ``transformers.GPT2Model`` built from a ``GPT2Config`` (no hub; dropout
  0, ``n_positions = 2 × points``, as Garg's ``TransformerModel``). Needs the ``hf`` extra.
* :class:`UTLearner`: the Unrolled Transformer of the video and text families (Porras-Valenzuela et al.),
  causal, on the same tokens, with learned positions and a LayerNorm + linear readout. Core install only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from unrolled.models.unrolled_transformer import Activation, Norm, UnrolledTransformer, init_normal
from unrolled.tasks.regression import RegressionBatch
from unrolled.trajectory import Trajectory


@dataclass(frozen=True)
class Prompts:
    """A batch of B prompts of N (x, y) pairs, every y_i a prediction target.

    Attributes:
        xs: inputs ``[B, N, d]``.
        ys: labels ``[B, N]`` (with label noise when the task has some).
        w_star: the regression vectors ``[B, d]``.
    """

    xs: Tensor
    ys: Tensor
    w_star: Tensor

    @classmethod
    def from_batch(cls, batch: RegressionBatch) -> Prompts:
        """A :class:`RegressionBatch` of n context pairs and a query as N = n + 1 pairs (query last)."""
        return cls(
            torch.cat([batch.X, batch.x_query.unsqueeze(1)], dim=1),
            torch.cat([batch.y, batch.y_query.unsqueeze(1)], dim=1),
            batch.w_star,
        )

    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def points(self) -> int:
        """N, the pairs per prompt."""
        return self.xs.shape[1]

    @property
    def d(self) -> int:
        return self.xs.shape[2]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Prompts:
        return Prompts(*(t.to(device=device, dtype=dtype) for t in (self.xs, self.ys, self.w_star)))

    def __getitem__(self, index: slice | Tensor) -> Prompts:
        """The prompts ``index`` selects (a slice or indices over the batch)."""
        return Prompts(self.xs[index], self.ys[index], self.w_star[index])


def interleave(xs: Tensor, ys: Tensor) -> Tensor:
    """Garg et al.'s ``_combine``: ``xs [B, N, d]``, ``ys [B, N]`` -> tokens ``[B, 2N, d]``,
    ``(x_1, [y_1, 0, …], x_2, …)``."""
    B, N, d = xs.shape
    if ys.shape != (B, N):
        raise ValueError(f"ys must be [B, N] = {[B, N]} for xs {list(xs.shape)}, got {list(ys.shape)}")
    wide = torch.cat([ys.unsqueeze(-1), xs.new_zeros(B, N, d - 1)], dim=-1)
    return torch.stack([xs, wide], dim=2).reshape(B, 2 * N, d)


def prompt_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Per-prompt squared error averaged over its N predictions: ``[B, N], [B, N] -> [B]`` (Garg's training
    loss is its batch mean)."""
    if prediction.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(prediction.shape)} != target shape {tuple(target.shape)}")
    return (prediction - target).square().mean(dim=1)


class InContextLearner(nn.Module):
    """What both learners share: the read-in, the shared readout and the trajectory.

    Subclasses build ``self.read_in``, ``self.norm`` (the final norm), ``self.read_out`` and implement
    :meth:`layers` (the states from the embedded tokens).
    """

    per_sample_loss = staticmethod(prompt_mse)
    d: int
    points: int
    depth: int

    read_in: nn.Linear
    norm: nn.Module
    read_out: nn.Linear

    def readout(self, state: Tensor) -> Tensor:
        """Predictions at the x tokens: ``[B, 2N, D] -> [B, N]``."""
        # norm first, then the x tokens: a view of the state taken under no_grad (the readouts a constrained
        # objective takes by value) would otherwise reach a module with requires_grad and no grad_fn
        return self.read_out(self.norm(state)[:, 0::2])[..., 0]

    def layers(self, embedded: Tensor, depth: int | None = None) -> tuple[Tensor, ...]:
        """States 0..depth from the read-in tokens ``[B, 2N, D]`` (state 0 adds the positions)."""
        raise NotImplementedError

    def check(self, prompts: Prompts) -> None:
        if not isinstance(prompts, Prompts):
            raise TypeError(f"an in-context learner runs on Prompts, got {type(prompts).__name__}")
        if prompts.d != self.d:
            raise ValueError(f"the learner reads d = {self.d} inputs, the prompts have d = {prompts.d}")
        if prompts.points > self.points:
            raise ValueError(
                f"prompts of {prompts.points} pairs; the learner has positions for {self.points} "
                "(build it with more points)"
            )

    def forward(self, prompts: Prompts, depth: int | None = None) -> Trajectory:
        """The trajectory of states ``[B, 2N, D]`` (0..L, or 0..``depth``: later layers are not run) with the
        shared readout ``-> [B, N]``."""
        self.check(prompts)
        states = self.layers(self.read_in(interleave(prompts.xs, prompts.ys)), depth)
        return Trajectory(states, self.readout)


def _forked_init(seed: int | None) -> Any:
    """A context that draws initialisations from ``seed`` without touching the global RNG's state."""
    if seed is None:
        return torch.random.fork_rng(enabled=False)
    ctx = torch.random.fork_rng(devices=[])

    class _Seeded:
        def __enter__(self) -> None:
            ctx.__enter__()
            torch.manual_seed(seed)

        def __exit__(self, *exc: Any) -> None:
            ctx.__exit__(*exc)

    return _Seeded()


class GPT2Learner(InContextLearner):
    """Garg et al.'s in-context learner: ``nn.Linear(d, D)`` → ``GPT2Model`` → ``nn.Linear(D, 1)``.

    Args:
        d: input dimension (the read-in's width; coordinates a curriculum leaves out are zero).
        points: the most pairs a prompt may have (GPT-2 gets ``n_positions = 2 × points``).
        width, depth, heads: GPT-2's ``n_embd``, ``n_layer``, ``n_head`` (Garg: tiny 64 × 3 × 2, small
            128 × 6 × 4, standard 256 × 12 × 8).
        seed: seeds the initialisation (GPT-2's own init, N(0, 0.02²), and PyTorch's for the read-in and
            read-out) without touching the global RNG; None: the global RNG.
        attn_implementation: ``sdpa`` (default) or ``eager``.
    """

    def __init__(
        self,
        d: int,
        points: int,
        width: int = 64,
        depth: int = 3,
        heads: int = 2,
        seed: int | None = None,
        attn_implementation: Literal["sdpa", "eager"] = "sdpa",
    ) -> None:
        super().__init__()
        try:
            from transformers import GPT2Config, GPT2Model
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "the GPT-2 in-context learner needs transformers: pip install 'unrolled[hf]' "
                "(the UT learner, kind 'ut', needs nothing more)"
            ) from exc
        if min(d, points, width, depth, heads) < 1 or width % heads:
            raise ValueError(
                f"need d, points, width, depth, heads >= 1 and heads | width, got d={d}, points={points}, "
                f"width={width}, depth={depth}, heads={heads}"
            )
        self.d, self.points, self.depth, self.width = d, points, depth, width
        config = GPT2Config(
            n_positions=2 * points,
            n_embd=width,
            n_layer=depth,
            n_head=heads,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            use_cache=False,
        )
        config._attn_implementation = attn_implementation
        with _forked_init(seed):
            self.read_in = nn.Linear(d, width)
            self.backbone = GPT2Model(config)
            self.read_out = nn.Linear(width, 1)
        self.norm = self.backbone.ln_f

    def layers(self, embedded: Tensor, depth: int | None = None) -> tuple[Tensor, ...]:
        """GPT2Model's forward, block by block, keeping every state (and stopping after ``depth``)."""
        from transformers.masking_utils import create_causal_mask

        gpt = self.backbone
        positions = torch.arange(embedded.shape[1], device=embedded.device).unsqueeze(0)
        h = gpt.drop(embedded + gpt.wpe(positions))
        mask = create_causal_mask(
            config=gpt.config, inputs_embeds=embedded, attention_mask=None, cache=None, position_ids=positions
        )
        states = [h]
        for block in gpt.h[: self.depth if depth is None else depth]:
            h = block(h, None, mask, position_ids=positions)
            h = h[0] if isinstance(h, tuple) else h
            states.append(h)
        return tuple(states)


class UTLearner(InContextLearner):
    """The Unrolled Transformer as an in-context learner on Garg's tokens (module docstring).

    State 0 is ``read_in(z) + p`` with learned positions p ~ N(0, 0.02²) (GPT-2's init); layers are
    :class:`~unrolled.models.unrolled_transformer.UnrolledTransformer` layers with causal attention; the
    readout is a LayerNorm and a linear read-out, shared by every layer.

    Args:
        d, points: as :class:`GPT2Learner`.
        width, depth, heads, activation, norm, init_std: of the UT layers.
        seed: seeds every initialisation (a CPU generator).
    """

    def __init__(
        self,
        d: int,
        points: int,
        width: int = 64,
        depth: int = 3,
        heads: int = 2,
        activation: Activation = "relu",
        norm: Norm = "layer",
        init_std: float = 0.02,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if min(d, points) < 1:
            raise ValueError(f"need d, points >= 1, got d={d}, points={points}")
        self.d, self.points, self.depth, self.width = d, points, depth, width
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        with _forked_init(seed):
            self.read_in = nn.Linear(d, width)
            self.read_out = nn.Linear(width, 1)
        self.position = nn.Parameter(torch.empty(2 * points, width))
        init_normal(self.position, 0.02, gen)
        self.backbone = UnrolledTransformer(
            width, depth, heads, activation, norm, init_std=init_std, generator=gen, causal=True
        )
        self.norm = nn.LayerNorm(width)

    def layers(self, embedded: Tensor, depth: int | None = None) -> tuple[Tensor, ...]:
        h = embedded + self.position[: embedded.shape[1]]
        states = [h]
        for layer in self.backbone.layers[: self.depth if depth is None else depth]:
            h = layer(h)
            states.append(h)
        return tuple(states)
