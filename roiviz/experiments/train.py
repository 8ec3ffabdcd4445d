"""The experiment loop: one backbone per (stride, seed), one head per strategy, one code path.

For every stride and seed:

1. draw the train and test splits (:func:`~roiviz.experiments.data.make_dataset`, seeded);
2. pretrain a :class:`~roiviz.experiments.model.Backbone` on dense segmentation, then freeze it
   and compute the feature maps of every image once;
3. for *every* strategy in the registry, through :func:`train_and_score` and nothing else:
   pool the proposals to ``P x P`` with ``strategy(features, rois, P, spatial_scale=1/stride)``,
   train a freshly initialised :class:`~roiviz.experiments.model.MaskHead` (same initial
   weights, same batches, same optimizer and steps for every strategy), and score it on the
   test proposals.

Why a frozen backbone: it isolates the one thing that differs between strategies (how box
coordinates become a fixed grid), lets the pooled features be computed once per strategy, and
makes seven strategies x two strides x several seeds fit in minutes on two CPU cores. The
backbone's pretraining never sees a proposal, so no strategy is favoured by it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._threads import torch_threads
from .data import CLASSES, LARGE_OBJECTS, DataConfig, ShapeSet, make_dataset
from .metrics import COCO_THRESHOLDS, average_precision, mask_iou
from .model import Backbone, MaskHead, SegmentationDecoder

__all__ = [
    "FULL",
    "QUICK",
    "ExperimentConfig",
    "evaluate",
    "fit_head",
    "pool",
    "pretrain_backbone",
    "run_experiment",
    "segmentation_quality",
    "train_and_score",
]

Strategy = Callable[..., torch.Tensor]
METRICS = ("mask_iou", "ap", "ap50", "ap75", "class_acc")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run; stored in the JSON next to the results.

    Attributes
    ----------
    strides : tuple[int, ...]
        Backbone strides to compare (powers of two; 8, 16, 32).
    seeds : tuple[int, ...]
        One full repetition (data, backbone, heads) per seed.
    n_pretrain, n_train, n_test : int
        Images per split (each holds ``data.objects`` shapes): the backbone's pretraining
        images, the heads' training images and the held-out test images.
    data : DataConfig
        The synthetic dataset.
    pooled_size : int
        ``P``: every strategy outputs ``P x P``; the head predicts a ``2P x 2P`` mask.
    channels : int
        Channels of the backbone's output feature map.
    head_width : int
        Channels of the head's convs.
    pretrain_steps, pretrain_batch : int
        Backbone pretraining (dense segmentation) steps and images per step.
    pretrain_lr : float
        Adam learning rate of the pretraining, decayed to zero by a cosine.
    steps, batch_size : int
        Head training steps and proposals per step.
    lr : float
        Adam learning rate of the heads, decayed to zero by a cosine.
    eval_size : int
        Masks are scored on an ``eval_size x eval_size`` grid in the proposal (the head's
        ``2P`` output upsampled bilinearly; the ground truth computed analytically).
    """

    strides: tuple[int, ...] = (16, 32)
    seeds: tuple[int, ...] = (0, 1, 2)
    n_pretrain: int = 1024
    n_train: int = 320
    n_test: int = 160
    data: DataConfig = field(default_factory=DataConfig)
    pooled_size: int = 7
    channels: int = 32
    head_width: int = 48
    pretrain_steps: int = 400
    pretrain_batch: int = 16
    pretrain_lr: float = 3e-3
    steps: int = 400
    batch_size: int = 64
    lr: float = 2e-3
    eval_size: int = 56

    def __post_init__(self) -> None:
        if not self.strides or any(
            not isinstance(s, int) or s < 4 or s > 64 or s & (s - 1) for s in self.strides
        ):
            raise ValueError(f"strides must be powers of two in [4, 64], got {self.strides}")
        if any(self.data.image_size % s for s in self.strides):
            raise ValueError(
                f"data.image_size ({self.data.image_size}) must be a multiple of every stride {self.strides}"
            )
        if (not self.seeds or len(set(self.seeds)) != len(self.seeds)
                or any(not isinstance(s, int) or s < 0 for s in self.seeds)):
            raise ValueError(f"seeds must be a non-empty list of distinct ints >= 0, got {self.seeds}")
        for name in ("n_pretrain", "n_train", "n_test", "pooled_size", "channels", "head_width",
                     "pretrain_batch", "batch_size", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 1 or self.pretrain_steps < 0:
            raise ValueError("steps must be >= 1 and pretrain_steps >= 0")
        if not (self.lr > 0 and self.pretrain_lr > 0):
            raise ValueError(f"lr and pretrain_lr must be > 0, got {self.lr}, {self.pretrain_lr}")

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        return dataclasses.asdict(self)

    def replace(self, **changes) -> ExperimentConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


#: The full run: strides 16 and 32, three seeds, on :data:`~.data.LARGE_OBJECTS` (objects of
#: 2.5-6 stride-32 cells, so the question is fair at both strides); about 7 minutes on one thread.
FULL = ExperimentConfig(
    data=LARGE_OBJECTS, n_pretrain=512, n_train=160, n_test=160, pretrain_steps=300,
    pretrain_batch=8, steps=300,
)
#: ``--quick``: stride 16 only, one seed, smaller splits and fewer steps (about 30 s), on the
#: small-object data (:data:`~.data.SMALL_OBJECTS`, 128-px images), where stride 16 is fair.
QUICK = ExperimentConfig(
    strides=(16,), seeds=(0,), n_pretrain=512, n_train=160, n_test=96, pretrain_steps=250,
    steps=250,
)


@contextmanager
def _cpu_settings(threads: int) -> Iterator[None]:
    """Set the thread count and flush denormals; afterwards restore the thread count and stop flushing.

    Without flushing, tiny activations and gradients (denormal floats) made training about
    ten times slower on this CPU.
    """
    flushing = torch.set_flush_denormal(True)  # returns whether flushing is supported
    try:
        with torch_threads(threads):
            yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def _cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))
    )


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int) -> torch.Tensor:
    return torch.cat([fn(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def pretrain_backbone(images: ShapeSet, stride: int, seed: int,
                      config: ExperimentConfig) -> tuple[Backbone, SegmentationDecoder]:
    """Train a backbone on per-pixel class segmentation, then freeze it (``eval``, no grad).

    The per-cell pixel-shuffle decoder makes every feature cell describe its ``stride x
    stride`` patch at pixel precision, so sub-cell positions are in the features for a pooling
    op to keep or lose. No proposal is involved: the backbone favours no strategy.
    Returns the frozen backbone and its (frozen) decoder, for :func:`segmentation_quality`.
    """
    torch.manual_seed(seed)
    net = Backbone(stride, config.channels)
    decoder = SegmentationDecoder(config.channels, 1 + len(CLASSES), stride)
    params = [*net.parameters(), *decoder.parameters()]
    if config.pretrain_steps:
        opt = torch.optim.Adam(params, lr=config.pretrain_lr)
        sched = _cosine(opt, config.pretrain_steps)
        gen = torch.Generator().manual_seed(seed)
        n = len(images.images)
        # Background dominates the pixels; weigh it down so the shapes' edges drive the loss.
        weight = torch.ones(1 + len(CLASSES))
        weight[0] = 0.25
        for _ in range(config.pretrain_steps):
            idx = torch.randint(n, (min(config.pretrain_batch, n),), generator=gen)
            logits = decoder(net(images.images[idx]))
            loss = F.cross_entropy(logits, images.segmentation[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval().requires_grad_(False)
    decoder.eval().requires_grad_(False)
    return net, decoder


def segmentation_quality(backbone: Backbone, decoder: SegmentationDecoder, test: ShapeSet) -> dict[str, float]:
    """How much the frozen features know at pixel level, on held-out images.

    ``seg_fg_iou``: IoU of predicted vs true foreground pixels; ``seg_class_acc``: class
    accuracy on the true foreground pixels. This is an upper bound of sorts on what any ROI
    strategy can pass on to a head: a strategy can lose sub-cell detail, never add it.
    """
    with torch.no_grad():
        pred = _batched(lambda x: decoder(backbone(x)).argmax(1), test.images, 64)  # [N, S, S]
    fg, pred_fg = test.segmentation > 0, pred > 0
    return {
        "seg_fg_iou": float((fg & pred_fg).sum() / (fg | pred_fg).sum().clamp(min=1)),
        "seg_class_acc": float((pred[fg] == test.segmentation[fg]).float().mean()),
    }


def pool(strategy: Strategy, features: torch.Tensor, rois: torch.Tensor, output_size: int,
         stride: int) -> torch.Tensor:
    """``strategy(features, rois, output_size, spatial_scale=1/stride)``, without autograd.

    Examples
    --------
    >>> import roiviz
    >>> f = torch.randn(1, 4, 4, 4)
    >>> tuple(pool(roiviz.STRATEGIES["roi_align"], f, torch.tensor([[0, 8., 8., 40., 40.]]), 7, 16).shape)
    (1, 4, 7, 7)
    """
    with torch.no_grad():
        return strategy(features, rois, output_size, spatial_scale=1.0 / stride).float().contiguous()


def fit_head(head: MaskHead, pooled: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
             config: ExperimentConfig, seed: int) -> list[float]:
    """Train ``head`` on pooled features: BCE on the soft ``2P x 2P`` mask + cross-entropy on the class.

    Returns the loss of every step. The batch order depends on ``seed`` only, so every
    strategy sees the same proposals in the same order.
    """
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    sched = _cosine(opt, config.steps)
    gen = torch.Generator().manual_seed(seed + 1)
    head.train()
    losses = []
    for _ in range(config.steps):
        idx = torch.randint(len(pooled), (min(config.batch_size, len(pooled)),), generator=gen)
        mask_logits, class_logits = head(pooled[idx])
        loss = F.binary_cross_entropy_with_logits(mask_logits, targets[idx]) + F.cross_entropy(
            class_logits, labels[idx]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def evaluate(head: MaskHead, pooled: torch.Tensor, test: ShapeSet, gt_masks: torch.Tensor,
             config: ExperimentConfig) -> dict[str, float]:
    """Score a trained head on the test proposals.

    Returns ``mask_iou`` (mean over proposals), ``ap`` (COCO mask AP over IoU 0.50:0.95),
    ``ap50``, ``ap75`` and ``class_acc``.
    """
    head.eval()
    with torch.no_grad():
        mask_logits, class_logits = head(pooled)
    probs = F.interpolate(mask_logits[:, None], size=config.eval_size, mode="bilinear",
                          align_corners=False)[:, 0]  # [K, E, E]
    ious = mask_iou(probs > 0, gt_masks)
    scores, pred = class_logits.softmax(1).max(1)
    labels = test.labels
    aps = {t: average_precision(scores, pred, labels, ious, t, len(CLASSES)) for t in COCO_THRESHOLDS}
    return {
        "mask_iou": float(ious.mean()),
        "ap": sum(aps.values()) / len(aps),
        "ap50": aps[0.5],
        "ap75": aps[0.75],
        "class_acc": float((pred == labels).float().mean()),
    }


def train_and_score(name: str, strategy: Strategy, stride: int, seed: int, train: ShapeSet,
                    test: ShapeSet, train_features: torch.Tensor, test_features: torch.Tensor,
                    targets: torch.Tensor, gt_masks: torch.Tensor,
                    config: ExperimentConfig) -> dict[str, float]:
    """The one code path every strategy goes through: pool, train a fresh head, score it."""
    start = time.perf_counter()
    p = config.pooled_size
    pooled_train = pool(strategy, train_features, train.rois, p, stride)
    pooled_test = pool(strategy, test_features, test.rois, p, stride)
    expected = (train_features.shape[1], p, p)
    if tuple(pooled_train.shape[1:]) != expected:
        raise ValueError(f"strategy {name!r} returned {tuple(pooled_train.shape)}, expected [K, *{expected}]")
    torch.manual_seed(seed)  # the same initial head for every strategy
    head = MaskHead(train_features.shape[1], p, len(CLASSES), config.head_width)
    losses = fit_head(head, pooled_train, targets, train.labels, config, seed)
    scores = evaluate(head, pooled_test, test, gt_masks, config)
    k = max(1, min(20, len(losses) // 5))
    scores.update(
        seed=seed,
        loss_first=sum(losses[:k]) / k,
        loss_last=sum(losses[-k:]) / k,
        seconds=time.perf_counter() - start,
    )
    return scores


def _summary(per_seed: list[dict[str, float]], metrics: tuple[str, ...] = METRICS) -> dict:
    out: dict = {}
    for m in metrics:
        values = torch.tensor([r[m] for r in per_seed], dtype=torch.float64)
        out[f"{m}_mean"] = float(values.mean())
        # Sample standard deviation across seeds; 0 with a single seed.
        out[f"{m}_std"] = float(values.std()) if len(values) > 1 else 0.0
    out["per_seed"] = per_seed
    return out


def run_experiment(config: ExperimentConfig, strategies: Mapping[str, Strategy] | None = None,
                   progress: bool = True, threads: int = 1) -> dict:
    """Run every strategy for every stride and seed; return the JSON-ready results.

    Parameters
    ----------
    config : ExperimentConfig
        What to run (see :data:`QUICK` and :data:`FULL`).
    strategies : mapping of name -> strategy, optional
        Defaults to :data:`roiviz.STRATEGIES` (all seven).
    progress : bool
        Show a tqdm bar (one tick per trained head).
    threads : int
        ``torch.set_num_threads`` during the run. The default, 1, is deliberate: on a CPU
        shared with other work, more threads than free cores made training 10-20x slower
        (PyTorch's workers spin and get descheduled), while one thread is never worse than
        ~1.5x off the best case.

    Returns
    -------
    dict
        ``{"config": ..., "strategies": [...], "seconds": ..., "full_box_mask_iou": ...
        (the mask IoU of predicting the whole proposal: the floor), "objects": {"extent_px_median",
        "extent_px_range"} (the longer box side of the test objects), "backbone": {"stride_16":
        {"seg_fg_iou_mean", ...}} (what the frozen features know), "results": {"stride_16":
        {"roi_align": {"mask_iou_mean": ..., "mask_iou_std": ..., "ap_mean": ..., ...,
        "per_seed": [...]}, ...}, ...}}``.
    """
    if strategies is None:
        from roiviz import STRATEGIES as strategies  # read at call time: no import cycle
    if not strategies:
        raise ValueError("strategies must name at least one strategy")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    start = time.perf_counter()
    per_seed: dict[int, dict[str, list]] = {s: {n: [] for n in strategies} for s in config.strides}
    baseline: list[float] = []
    extents: list[torch.Tensor] = []  # each test object's longer box side, in pixels
    quality: dict[int, list[dict[str, float]]] = {s: [] for s in config.strides}
    total = len(config.strides) * len(config.seeds) * len(strategies)
    with _cpu_settings(threads), tqdm(total=total, disable=not progress, desc="experiment",
                                     unit="head") as bar:
        for seed in config.seeds:
            bar.set_description(f"seed {seed}: data")
            pre = make_dataset(config.n_pretrain, seed, config.data, split="pretrain")
            train = make_dataset(config.n_train, seed, config.data, split="train")
            test = make_dataset(config.n_test, seed, config.data, split="test")
            targets = train.targets(2 * config.pooled_size, config.data.supersample)
            gt_masks = test.targets(config.eval_size, 2) >= 0.5
            # What a head that learned nothing but "fill the box" would score: the floor.
            baseline.append(float(mask_iou(torch.ones_like(gt_masks), gt_masks).mean()))
            extents.append((test.gt_boxes[:, 2:] - test.gt_boxes[:, :2]).amax(1))
            for stride in config.strides:
                bar.set_description(f"stride {stride} seed {seed}: backbone")
                backbone, decoder = pretrain_backbone(pre, stride, seed, config)
                quality[stride].append(segmentation_quality(backbone, decoder, test))
                with torch.no_grad():
                    f_train = _batched(backbone, train.images, 64)
                    f_test = _batched(backbone, test.images, 64)
                for name, strategy in strategies.items():
                    bar.set_description(f"stride {stride} seed {seed}: {name}")
                    scores = train_and_score(name, strategy, stride, seed, train, test, f_train,
                                             f_test, targets, gt_masks, config)
                    per_seed[stride][name].append(scores)
                    bar.set_postfix(iou=f"{scores['mask_iou']:.3f}")
                    bar.update()
    return {
        "config": config.to_dict(),
        "strategies": list(strategies),
        "threads": threads,
        "seconds": time.perf_counter() - start,
        "full_box_mask_iou": sum(baseline) / len(baseline),
        "objects": {"extent_px_median": float(torch.cat(extents).median()),
                    "extent_px_range": [float(torch.cat(extents).min()), float(torch.cat(extents).max())]},
        "backbone": {f"stride_{s}": _summary(quality[s], ("seg_fg_iou", "seg_class_acc"))
                     for s in config.strides},
        "results": {
            f"stride_{s}": {n: _summary(per_seed[s][n]) for n in strategies} for s in config.strides
        },
    }
