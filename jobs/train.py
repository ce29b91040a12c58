"""Train DepthSeg with Ray Train on a chip store; export the best-by-mIoU model bundle.

    python jobs/train.py --config configs/vitb.yaml --chips s3://bucket/chips/liuzhou \
        --storage s3://bucket/runs --name vitb-liuzhou --num-workers 4 --gpu

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --config configs/tiny.yaml --chips ... --storage ...

The run lives in <storage>/<name>/: checkpoint_epoch_NNNN/ (Ray checkpoints), best/ (the
model bundle), metrics.jsonl, config.yaml. See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from depthseg.errors import DepthSegError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True,
                   help="a preset name (tiny, demo, vits, vitb, vitl) or a YAML file")
    p.add_argument("--chips", required=True, help="chip store from jobs/prepare.py")
    p.add_argument("--storage", required=True, help="runs folder: local path or s3://bucket/pre")
    p.add_argument("--name", default=None, help="run name (default: <preset>-<UTC time>)")
    p.add_argument("--num-workers", type=int, default=None,
                   help="training workers (default: 1; with --gpu: one per GPU of the cluster)")
    p.add_argument("--gpu", action="store_true", help="one GPU per worker, bf16 autocast")
    p.add_argument("--resume", action="store_true", help="continue the run --name")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key, e.g. --set train.lr=3e-4 "
                        "--set model.depth_prompter=false (repeatable)")
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    p.add_argument("--max-failures", type=int, default=3,
                   help="worker-group restarts from the latest checkpoint")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="CPUs reserved per worker, and so its torch threads (default: CPU "
                        "workers share the cluster's CPUs when the training split is cached, "
                        "else 1; GPU workers 1); Ray Data reads with the rest")
    p.add_argument("--tensorboard", action="store_true", help="also write TensorBoard events")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's own INFO messages (hidden by default)")
    p.add_argument("--ray-address", default=None, help="default: RAY_ADDRESS or a local Ray")
    p.add_argument("--random-frozen-encoder", action="store_true",
                   help="train a paper preset although its frozen encoder has no weights "
                        "(encoder.weights: null); for smoke tests only")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Imported once the arguments are parsed: --help answers without torch or Ray.
    from depthseg.config import explicit_model_keys, load_config, parse_overrides
    from depthseg.io.chips import ChipStore
    from depthseg.io.storage import Storage, absolute, join
    from depthseg.progress import quiet_ray
    from depthseg.train.loop import (
        RunSpec,
        check_batch_split,
        check_encoder_weights,
        fit_config_to_store,
    )
    from depthseg.train.ray_train import Scaling, train, worker_input_error

    try:
        import ray
        import ray.data
        import ray.train

        args.chips, args.storage = absolute(args.chips), absolute(args.storage)
        overrides = parse_overrides(args.set)
        config = load_config(args.config, overrides)
        check_encoder_weights(config, args.random_frozen_encoder)
        storage = Storage.from_env()
        # Everything the chip store can tell is checked here, before Ray starts: a mismatch
        # is one line in seconds, not a worker traceback retried max_failures times.
        config = fit_config_to_store(config, ChipStore.open(args.chips, storage),
                                     explicit_model_keys(args.config, overrides))
        recipe = {k: v for k, v in (("epochs", args.epochs),
                                       ("batch_size", args.batch_size)) if v is not None}
        if recipe:
            config = dataclasses.replace(config, train=dataclasses.replace(config.train,
                                                                           **recipe))
        name = args.name or f"{Path(args.config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        spec = RunSpec(config=config, chips=args.chips, run_dir=join(args.storage, name),
                       storage=storage, tensorboard=args.tensorboard)
        # Workers inherit the S3 settings through Storage; Ray itself is set up here only.
        ray.init(address=args.ray_address or os.environ.get("RAY_ADDRESS"),
                 log_to_driver=True, configure_logging=False, **quiet_ray(args.verbose))
        # The epoch lines are the progress display; Ray Data's bars would drown them.
        ray.data.DataContext.get_current().enable_progress_bars = False
        workers = args.num_workers
        if workers is None:
            gpus_now = int(ray.cluster_resources().get("GPU", 0))
            workers = max(1, gpus_now) if args.gpu else 1
            if args.gpu and gpus_now == 0:
                # An autoscaling cluster starts with no GPU node: one worker scales one up.
                print("note: the cluster has no GPU yet (autoscaling?); training with 1 GPU "
                      "worker; pass --num-workers N for more", file=sys.stderr)
        check_batch_split(config, workers)
        scaling = Scaling(num_workers=workers, gpu=args.gpu, max_failures=args.max_failures,
                          cpus_per_worker=args.cpus_per_worker)
        result = train(spec, name, args.storage, scaling, resume=args.resume,
                       verbose=args.verbose)
    except DepthSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ray.train.TrainingFailedError as err:  # Ray Train v2 raises when the run fails
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: training failed ({first}); see the worker logs above", file=sys.stderr)
        return 1
    input_error = worker_input_error(spec.run_dir, storage)
    if input_error is not None:
        print(f"error: {input_error}", file=sys.stderr)
        return 2
    if getattr(result, "error", None) is not None:
        print(f"error: training failed: {result.error}", file=sys.stderr)
        return 1
    print(f"done: {spec.run_dir} (best model bundle: {join(spec.run_dir, 'best')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
