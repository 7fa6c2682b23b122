"""``python -m dwp_lib data prepare``: fetch, verify and cache MNIST and a notMNIST variant."""

from __future__ import annotations

import sys
import time

from ..config import current_preset
from .sources import DataUnavailableError


def run(args) -> int:
    from . import load_mnist, load_notmnist

    if getattr(args, "action", "prepare") != "prepare":
        raise ValueError(f"unknown data action {args.action!r}; valid actions are prepare")
    variant = getattr(args, "notmnist", None) or "synthetic"
    preset = getattr(args, "preset", None) or current_preset()
    config = None
    if variant == "synthetic":
        from .synthetic import SyntheticConfig

        config = SyntheticConfig.preset(preset)
    failed = 0
    jobs = [(f"MNIST {s}", lambda s=s: load_mnist(s)) for s in ("train", "test")]
    jobs += [
        (f"notMNIST {variant} {s}", lambda s=s: load_notmnist(s, variant=variant, config=config))
        for s in ("train", "test")
    ]
    for name, job in jobs:
        start = time.perf_counter()
        try:
            ds = job()
        except DataUnavailableError as err:
            print(f"error: {name} could not be prepared\n{err}\n", file=sys.stderr)
            failed += 1
            continue
        print(f"{name}: {len(ds):,} images in {time.perf_counter() - start:.1f} s")
        print(f"  {ds.describe()}")
        if ds.provenance.get("label"):  # the sample: what to call it, its licence and credits
            p = ds.provenance
            print(f"  {p['label']}; licence {p['licence']}; {p['credits']}")
    return 2 if failed else 0  # like every command's errors: each data set says what to do
