"""Training: chip preparation, the training loop, Ray Train wiring, evaluation.

* :func:`depthseg.train.prepare.prepare_chips`: sources -> chip store (``jobs/prepare.py``);
* :func:`depthseg.train.loop.fit`: the plain PyTorch loop (runs with or without Ray);
* :func:`depthseg.train.ray_train.train`: ``TorchTrainer`` around it (``jobs/train.py``);
* :func:`depthseg.train.evaluate.evaluate`: Table I metrics of a bundle (``jobs/evaluate.py``).

Submodules are imported explicitly so that importing this package does not pull in Ray.
"""
