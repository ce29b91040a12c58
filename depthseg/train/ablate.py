"""The paper's Table II ablation on a synthetic height-confusion benchmark.

**Benchmark.** Three synthetic regions from fixed seeds, one per split (train, val, test): the
splits are different places, not disjoint chips of one place. The synthetic generator builds
classes that look alike from above and differ in height (roofs against impervious ground,
trees against crops), which is what depth prompting claims to separate. Each region becomes
its own chip store (all of its chips in its split) with the nDSM as the depth target, and,
with a Depth Anything ``teacher``, a second set with the teacher's depth.

**Rows** (:data:`ROWS`): encoder only; + adapter; + depth prompter; both (the full model);
a capacity control, the full model with the depth loss weight at 0 (the prompter's
parameters without depth supervision); and the DeepLabv3 baseline. Each row trains with
every seed (``train.seed``: initialisation and data order) on the train store, keeps the best
epoch on the val store and is scored on the test store.

**Resumable.** A (depth source, row, seed) whose ``eval/metrics.json`` exists is not run
again; a benchmark store that is complete is not rebuilt.

Outputs under ``out``: ``ablation.json`` (every run and the mean +- std per row),
``ablation.md`` and ``ablation.png`` (mIoU per row with error bars).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from depthseg.config import Config
from depthseg.errors import InputError
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage

#: Table II rows: name -> (description, model overrides, train overrides).
ROWS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "encoder": ("encoder only (no adapter, no depth prompter)",
                {"adapter": False, "depth_prompter": False}, {}),
    "adapter": ("+ adapter", {"adapter": True, "depth_prompter": False}, {}),
    "prompter": ("+ depth prompter", {"adapter": False, "depth_prompter": True}, {}),
    "both": ("+ adapter + depth prompter (DepthSeg)",
             {"adapter": True, "depth_prompter": True}, {}),
    "no-depth-loss": ("DepthSeg with the depth loss weight at 0 (capacity control)",
                      {"adapter": True, "depth_prompter": True}, {"depth_loss_weight": 0.0}),
    "deeplabv3": ("DeepLabv3 baseline", {"arch": "deeplabv3"}, {}),
}
SPLITS = ("train", "val", "test")
#: Region seeds of the benchmark, one region per split.
REGION_SEEDS = {"train": 2101, "val": 2202, "test": 2303}
METRICS = ("mF1", "mIoU", "OA", "Kappa")
CLASSES = ("building", "impervious surface", "forest", "cropland")


@dataclasses.dataclass(frozen=True)
class AblationPlan:
    """What one ablation run does.

    Attributes:
        out: Output folder.
        config: The preset (``configs/demo.yaml`` for tiny, ``configs/vits.yaml`` ...).
        seeds: Training seeds per row.
        rows: Row names (keys of :data:`ROWS`).
        region_size: Side of each benchmark region in pixels.
        chip_size: Chip side of the benchmark stores.
        teacher: Depth Anything model (folder or official ``.pth``) for a second depth
            source, or None (nDSM only).
        baseline_backbone: Backbone of the DeepLabv3 row.
    """

    out: Path
    config: Config
    seeds: tuple[int, ...] = (0, 1, 2)
    rows: tuple[str, ...] = tuple(ROWS)
    region_size: int = 1536
    chip_size: int = 256
    teacher: str | None = None
    baseline_backbone: str = "mobilenet_v3_large"

    def __post_init__(self) -> None:
        unknown = [r for r in self.rows if r not in ROWS]
        if unknown:
            raise InputError(f"ablation rows {unknown} are not known; give some of "
                             f"{', '.join(ROWS)}")
        if len(self.seeds) < 1:
            raise InputError("give at least one seed, e.g. --seeds 0 1 2")

    @property
    def sources(self) -> tuple[str, ...]:
        """Depth targets: the nDSM, and the teacher's depth when a teacher is given."""
        return ("ndsm", "teacher") if self.teacher else ("ndsm",)


def build_benchmark(plan: AblationPlan, storage: Storage, log: Callable[[str], None] = print
                    ) -> dict[str, dict[str, str]]:
    """Make the three regions and their chip stores (skipping complete ones).

    Returns:
        ``{source: {split: chip store path}}``.
    """
    from depthseg.synthetic import Region, make_region
    from depthseg.train.prepare import PrepareOptions, prepare_chips

    stores: dict[str, dict[str, str]] = {source: {} for source in plan.sources}
    # 4-band presets (the paper's GaoFen-2 setting) get 4-band uint16 regions, B G R NIR read
    # as R G B NIR; 3-band ones uint8 RGB.
    four = plan.config.model.in_channels == 4
    dtype, bands = ("uint16", (3, 2, 1, 4)) if four else ("uint8", (1, 2, 3))
    for k, split in enumerate(SPLITS):
        for source in plan.sources:
            stores[source][split] = str(plan.out / "chips" / source / split)
        if all(_complete(Path(stores[s][split]), storage) for s in plan.sources):
            continue
        folder = plan.out / "regions" / f"{split}-{dtype}"
        if (folder / "region.json").is_file():
            region = Region.load(folder)
        else:
            region = make_region(folder, size=plan.region_size, seed=REGION_SEEDS[split],
                                 dtype=dtype)
        fractions = tuple(1.0 if i == k else 0.0 for i in range(3))
        for source in plan.sources:
            store = Path(stores[source][split])
            if _complete(store, storage):
                continue
            depth = ({"height": str(region.height)} if source == "ndsm"
                     else {"teacher": plan.teacher})
            prepare_chips(PrepareOptions(
                out=str(store), scenes=(str(region.scenes[0].parent),),
                labels=(str(region.labels),), bands=bands, chip_size=plan.chip_size,
                block=1, fractions=fractions, seed=0, **depth), storage,  # type: ignore[arg-type]
                log=lambda *_: None)
            log(f"benchmark: {source} {split} store {store} "
                f"({len(ChipStore.open(str(store), storage).indices(split))} chips)")
    return stores


def _complete(store: Path, storage: Storage) -> bool:
    try:
        return ChipStore.open(str(store), storage).stats is not None
    except Exception:  # noqa: BLE001 - absent or half-written: (re)build it
        return False


def row_config(base: Config, row: str, seed: int, baseline_backbone: str) -> Config:
    """The preset with a row's switches and the run's seed."""
    _, model_overrides, train_overrides = ROWS[row]
    model = dataclasses.replace(base.model, **model_overrides)
    if row == "deeplabv3":
        model = dataclasses.replace(model, baseline_backbone=cast(Any, baseline_backbone))
    train = dataclasses.replace(base.train, seed=seed, **train_overrides)
    return dataclasses.replace(base, model=model, train=train)


class SplitFeed:
    """Training batches from one store's train split, validation from another's val split."""

    def __init__(self, train: str, val: str, storage: Storage, batch_size: int, seed: int
                 ) -> None:
        from depthseg.train.data import LocalFeed

        self.train_feed = LocalFeed(train, storage, batch_size, seed)
        self.val_feed = LocalFeed(val, storage, batch_size, seed)
        self.num_train = self.train_feed.num_train

    def train_batches(self, epoch: int) -> Any:
        """One epoch of the train region's chips."""
        return self.train_feed.train_batches(epoch)

    def val_batches(self) -> Any:
        """The val region's chips."""
        return self.val_feed.val_batches()


def run_one(plan: AblationPlan, stores: dict[str, str], source: str, row: str, seed: int,
            storage: Storage) -> dict[str, Any]:
    """Train and score one (source, row, seed); reuse its result when it exists."""
    from depthseg.train.evaluate import evaluate
    from depthseg.train.loop import RunSpec, fit, fit_config_to_store

    folder = plan.out / "runs" / source / row / f"seed{seed}"
    result = folder / "eval" / "metrics.json"
    if result.is_file():
        return json.loads(result.read_text())
    config = row_config(plan.config, row, seed, plan.baseline_backbone)
    config = fit_config_to_store(config, ChipStore.open(stores["train"], storage))
    spec = RunSpec(config, stores["train"], str(folder), storage)
    fit(spec, SplitFeed(stores["train"], stores["val"], storage, config.train.batch_size, seed),
        log=lambda *_: None)
    evaluate(str(folder / "best"), stores["test"], "test", out=str(folder / "eval"),
             storage=storage)
    return json.loads(result.read_text())


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds per (source, row), in percent."""
    summary: dict[str, Any] = {}
    for source, rows in results.items():
        summary[source] = {}
        for row, runs in rows.items():
            values: dict[str, list[float]] = {m: [100 * r[m] for r in runs] for m in METRICS}
            for name in CLASSES:
                values[f"IoU {name}"] = [100 * r["per_class"][name]["iou"] for r in runs
                                         if name in r["per_class"]]
            summary[source][row] = {
                key: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1))
                      if len(v) > 1 else 0.0, "n": len(v)}
                for key, v in values.items() if v}
    return summary


def markdown(summary: dict[str, Any], plan: AblationPlan) -> str:
    """The Table II markdown: one table per depth source, mean +- std over seeds."""
    keys = [*METRICS, *(f"IoU {c}" for c in CLASSES)]
    lines = [f"Seeds {list(plan.seeds)}; regions {plan.region_size} px (seeds "
             f"{REGION_SEEDS}); values in %, mean +- sample std over seeds.", ""]
    for source, rows in summary.items():
        lines += [f"### Depth target: {'nDSM' if source == 'ndsm' else 'Depth Anything teacher'}",
                  "", "| row | " + " | ".join(keys) + " |",
                  "| --- | " + " | ".join("---:" for _ in keys) + " |"]
        for row, stats in rows.items():
            cells = [f"{stats[k]['mean']:.1f} +- {stats[k]['std']:.1f}" if k in stats else "-"
                     for k in keys]
            lines.append(f"| {ROWS[row][0]} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path) -> None:
    """Plot the mIoU of each row with error bars (a group of bars per depth source)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(summary)
    rows = list(next(iter(summary.values())))
    fig, ax = plt.subplots(figsize=(1.4 * len(rows) + 2, 3.6))
    width = 0.8 / len(sources)
    for k, source in enumerate(sources):
        means = [summary[source][r]["mIoU"]["mean"] for r in rows]
        stds = [summary[source][r]["mIoU"]["std"] for r in rows]
        ax.bar(np.arange(len(rows)) + k * width, means, width, yerr=stds, capsize=4,
               label="nDSM" if source == "ndsm" else "teacher")
    ax.set_xticks(np.arange(len(rows)) + width * (len(sources) - 1) / 2)
    ax.set_xticklabels(rows, rotation=20)
    ax.set_ylabel("test mIoU (%)")
    ax.set_title("Table II ablation (mean +- std over seeds)")
    if len(sources) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_ablation(plan: AblationPlan, storage: Storage | None = None,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build the benchmark, run every (source, row, seed), write the summary files."""
    storage = storage or Storage()
    plan.out.mkdir(parents=True, exist_ok=True)
    # One benchmark and preset per folder: a resumed run must add to like results only.
    setup = {"encoder": plan.config.model.encoder.name,
             "in_channels": plan.config.model.in_channels, "region_size": plan.region_size,
             "chip_size": plan.chip_size, "epochs": plan.config.train.epochs}
    recorded = plan.out / "ablation-setup.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != setup:
        raise InputError(f"{str(plan.out)!r} holds an ablation with "
                         f"{json.loads(recorded.read_text())}, not {setup}; give another --out "
                         "or the same settings")
    recorded.write_text(json.dumps(setup, indent=2))
    stores = build_benchmark(plan, storage, log)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    total = len(plan.sources) * len(plan.rows) * len(plan.seeds)
    done = 0
    for source in plan.sources:
        results[source] = {}
        for row in plan.rows:
            results[source][row] = []
            for seed in plan.seeds:
                metrics = run_one(plan, stores[source], source, row, seed, storage)
                results[source][row].append(metrics)
                done += 1
                log(f"ablation: {done}/{total} {source} {row} seed {seed}: test mIoU "
                    f"{100 * metrics['mIoU']:.1f}")
    summary = summarise(results)
    doc = {"seeds": list(plan.seeds), "rows": {r: ROWS[r][0] for r in plan.rows},
           "region_seeds": REGION_SEEDS, "region_size": plan.region_size,
           "epochs": plan.config.train.epochs, "encoder": plan.config.model.encoder.name,
           "summary": summary,
           "runs": {s: {r: [{k: m[k] for k in (*METRICS, "per_class")} for m in runs]
                        for r, runs in rows.items()} for s, rows in results.items()}}
    (plan.out / "ablation.json").write_text(json.dumps(doc, indent=2, allow_nan=True))
    (plan.out / "ablation.md").write_text(markdown(summary, plan))
    plot(summary, plan.out / "ablation.png")
    return doc
