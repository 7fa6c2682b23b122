"""Where the independent units of a stage run: here, in local worker processes, or on Ray.

Two stages of the pipeline are made of units that do not talk to each other: the source nets
(net ``i`` is trained from seed ``seed + i``) and the cells of the prior grid (one Bayesian CNN
per method, size and split seed). ``executor.kind`` chooses where those units run:

- ``local`` (the default): in this process one after another, or in ``source.workers`` /
  ``grid.workers`` processes of this machine;
- ``ray``: each unit is a `Ray <https://docs.ray.io>`_ core task that asks for
  ``cpus_per_task`` CPUs and a share of a GPU (``gpus_per_net``, ``gpus_per_cell``: 0.25 lets
  four cells share one GPU). ``address`` says which cluster: ``None`` starts a local one on this
  machine (loopback only, stopped when the stage ends), ``"auto"`` joins the cluster this
  machine is part of (``ray start --head`` / ``ray start --address=...``, or a SLURM
  allocation started with Ray's ``symmetric-run``), ``"ray://host:10001"`` a remote one.
An address is first tried with a plain TCP connection of ``connect_timeout`` seconds (Ray
itself would retry an unreachable one for ever), and a unit that no node of the cluster can
hold (more CPUs or GPUs than any node has) is refused before anything is submitted.

The executor never changes a result: every unit seeds itself, sets its own thread count and
runs the same function; what it returns (a net's weights and record, a grid row) comes back to
this process, which writes it - the verified checkpoint, the CSV row - the moment it arrives.
An interrupted run therefore resumes from its folder whichever executor ran it, and units
already written are not submitted again. The executor is not part of a run's config key.

Ray is an optional dependency: ``pip install 'dwp_lib[ray]'``.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from ..config import ConfigValueError, check_fields
from .names import ExperimentError

KINDS = ("local", "ray")
#: The GPU share of a task when the config leaves it unset and the cluster has GPUs: a source
#: net of the paper (FConv(256, 512), batches of 64) keeps one GPU busy; a grid cell (one small
#: Bayesian CNN on 50-1,000 digits) leaves most of one idle, so four share it.
GPU_SHARES = {"net": 1.0, "cell": 0.25}
RAY_INSTALL = "pip install 'dwp_lib[ray]'"
#: the ports of an address without one: Ray's GCS (``host``) and Ray Client (``ray://host``)
RAY_PORTS = {"gcs": 6379, "client": 10001}


class ExecutorError(ExperimentError):
    """The executor cannot run: Ray missing, its cluster unreachable or too small for a unit."""


@dataclass
class ExecutorConfig:
    """Where the source nets and the grid cells run (see the module docstring).

    ``kind``: ``local`` or ``ray``. ``address``: the Ray cluster (``None``: start a local one,
    ``auto``: the running one, or ``ray://host:port``). ``cpus_per_task``: CPUs each task asks
    for (and its torch threads). ``gpus_per_net`` / ``gpus_per_cell``: the share of a GPU a
    source net / a grid cell asks for (0: CPU only, and Ray hides the GPUs from the task;
    ``None``: :data:`GPU_SHARES` when the cluster has GPUs, else 0).
    ``num_cpus`` / ``num_gpus``: the size of a local cluster started here (``None``: all).
    ``connect_timeout``: seconds to wait for the cluster at ``address`` to answer.
    """

    kind: str = "local"
    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_net: float | None = None
    gpus_per_cell: float | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.connect_timeout > 0:
            raise ConfigValueError(f"connect_timeout={self.connect_timeout}: must be > 0")
        if self.kind not in KINDS:
            raise ConfigValueError(f"kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        if self.cpus_per_task <= 0:
            raise ConfigValueError(f"cpus_per_task={self.cpus_per_task}: must be > 0")
        for name in ("gpus_per_net", "gpus_per_cell"):
            share = getattr(self, name)
            if share is None:
                continue
            if share < 0 or (share > 1 and share != int(share)):
                raise ConfigValueError(
                    f"{name}={share}: a share of one GPU in [0, 1] (0.25: four tasks per GPU) "
                    "or a whole number of GPUs"
                )
        if self.address == "":
            self.address = None
        if self.address not in (None, "auto"):
            split_address(self.address, "address")
        if self.kind == "ray" and self.address is None:  # a local cluster: can it hold a unit?
            if self.num_cpus is not None and self.cpus_per_task > self.num_cpus:
                raise ConfigValueError(
                    f"cpus_per_task={self.cpus_per_task:g} is more than the num_cpus="
                    f"{self.num_cpus} of the local Ray cluster: no task could start; lower "
                    "cpus_per_task or raise num_cpus"
                )
            for name in ("gpus_per_net", "gpus_per_cell"):
                share = getattr(self, name)
                if self.num_gpus is not None and share is not None and share > self.num_gpus:
                    raise ConfigValueError(
                        f"{name}={share:g} is more than the num_gpus={self.num_gpus} of the "
                        f"local Ray cluster: no task could start; lower {name} (0: CPU only) "
                        "or raise num_gpus"
                    )

    def share(self, unit: str, has_gpus: bool) -> float:
        """The GPU share a ``unit`` (``net`` or ``cell``) asks for on a cluster with or without
        GPUs."""
        share = getattr(self, f"gpus_per_{unit}")
        if share is None:
            return GPU_SHARES[unit] if has_gpus else 0.0
        return float(share)

    @property
    def threads(self) -> int:
        """Torch threads of one task: its CPUs, at least one."""
        return max(1, int(self.cpus_per_task))

    @staticmethod
    def slots(gpus: int, share: float) -> int:
        """How many tasks asking for ``share`` of a GPU run at once on ``gpus`` GPUs."""
        if share <= 0:
            raise ValueError("slots() is for GPU tasks (share > 0)")
        return max(1, int(gpus / share + 1e-9)) if share <= 1 else max(1, int(gpus // share))


def import_ray():
    """The ``ray`` module, or an :class:`ExecutorError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "executor.kind=ray needs Ray, which is not installed here: run "
            f"{RAY_INSTALL} (or pip install ray), or leave executor.kind=local"
        ) from None
    return ray


def init_options(cfg: ExecutorConfig) -> dict[str, Any]:
    """The ``ray.init`` arguments for ``cfg``: a local cluster on the loopback address with
    ``num_cpus`` / ``num_gpus`` when ``address`` is unset, else the cluster at ``address``."""
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    if cfg.address is None:
        kwargs.update(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, _node_ip_address="127.0.0.1")
        # Ray starts its workers at niceness 15: on a machine that also runs other work, that
        # makes a unit several times slower than in a local worker process (measured: 4x)
        kwargs["_system_config"] = {"worker_niceness": 0}
    else:
        kwargs["address"] = cfg.address
    # a task's progress bars would reach this terminal as one log line per update
    env = {"DWP_PROGRESS": "0"}
    if cfg.address is None:  # the workers import dwp_lib from this checkout (installed or not)
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    kwargs["runtime_env"] = {"env_vars": env}
    return kwargs


def split_address(address: str, name: str = "executor.address") -> tuple[str, int]:
    """``(host, port)`` of a Ray address ``host[:port]`` or ``ray://host[:port]`` (the setting
    ``name``); a :class:`ConfigValueError` for text that is not one."""
    client = address.startswith("ray://")
    rest = address[len("ray://") :] if client else address
    host, _, port = rest.rstrip("/").rpartition(":") if ":" in rest else (rest, "", "")
    host = host.strip("[]")
    if not host or (port and not port.isdigit()):
        raise ConfigValueError(
            f"{name}={address!r} is not a Ray address: give HOST:PORT (the head's "
            f"GCS, port {RAY_PORTS['gcs']}), ray://HOST:PORT (Ray Client, port "
            f"{RAY_PORTS['client']}) or auto"
        )
    return host, int(port) if port else RAY_PORTS["client" if client else "gcs"]


def check_reachable(address: str, timeout: float) -> None:
    """Raise :class:`ExecutorError` unless ``address`` (``host:port`` or ``ray://host:port``)
    resolves and accepts a TCP connection within ``timeout`` seconds: Ray itself retries an
    unreachable cluster for ever."""
    host, port = split_address(address)
    fix = (
        "start the cluster first (ray start --head on the head node), correct "
        "executor.address, raise executor.connect_timeout for a slow network, or leave "
        "executor.kind=local"
    )
    pool = ThreadPoolExecutor(1)  # name resolution has no timeout of its own
    try:
        found = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = found.result(timeout=timeout)
    except FutureTimeout:
        raise ExecutorError(
            f"Ray at executor.address={address!r} cannot be reached: the name {host!r} did not "
            f"resolve within {timeout:g} s; {fix}"
        ) from None
    except OSError as err:
        raise ExecutorError(
            f"Ray at executor.address={address!r} cannot be reached: {host!r} is not a known "
            f"host name ({err.strerror or err}); {fix}"
        ) from None
    finally:
        pool.shutdown(wait=False)
    why = "no address"
    for family, kind, proto, _, where in infos:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(where)
            return
        except TimeoutError:
            why = f"no answer within {timeout:g} s"
        except OSError as err:
            why = err.strerror or str(err)
    raise ExecutorError(
        f"Ray at executor.address={address!r} cannot be reached: port {port} of {host} "
        f"({why}); {fix}"
    )


@contextlib.contextmanager
def ray_cluster(cfg: ExecutorConfig) -> Iterator[Any]:
    """Connect to (or start) the Ray cluster of ``cfg`` for the ``with`` block.

    A cluster this process is already connected to is used as it is and left running; one
    started here (``address=None``) listens on the loopback address only and is shut down at
    the end of the block, also when a unit fails or the run is interrupted.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs = init_options(cfg)
    if cfg.address not in (None, "auto"):
        check_reachable(cfg.address, cfg.connect_timeout)
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        said = str(err).strip().rstrip(".")
        if cfg.address == "auto":
            raise ExecutorError(
                f"executor.address=auto found no running Ray cluster to join ({said}); start "
                "one (ray start --head), give its address (executor.address=HOST:6379 or "
                "ray://HOST:10001), leave executor.address unset to start one here, or use "
                "executor.kind=local"
            ) from None
        where = "a local Ray cluster" if cfg.address is None else f"Ray at {cfg.address!r}"
        raise ExecutorError(
            f"could not start or reach {where} ({said}); start the cluster first (ray start "
            "--head on the head node), or use executor.address=auto on a node of it, or leave "
            "executor.kind=local"
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


def run_on_ray(
    cfg: ExecutorConfig,
    fn: Callable[..., Any],
    shared: Any,
    calls: Iterable[tuple],
    *,
    unit: str,
) -> Iterator[Any]:
    """``fn(shared, *args)`` for every ``args`` of ``calls``, each a Ray task asking for
    ``cfg.cpus_per_task`` CPUs and its ``unit``'s share of a GPU (``net`` or ``cell``, see
    :meth:`ExecutorConfig.share`); yields the results as they finish.

    ``shared`` (the data, the bank, the kernel VAEs) is put in Ray's object store once and
    handed to every task. ``fn`` must be a module-level function (the workers import it). A
    unit's exception is raised here as itself (Ray's wrapper is also an instance of it); when
    the caller stops early, the tasks still queued or running are cancelled.
    """
    calls = list(calls)
    if not calls:
        return
    with ray_cluster(cfg) as ray:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        gpus = cfg.share(unit, any(n.get("GPU", 0) > 0 for n in nodes))
        check_fits(nodes, unit, cfg.cpus_per_task, gpus)
        task = ray.remote(fn).options(num_cpus=cfg.cpus_per_task, num_gpus=gpus)
        ref = ray.put(shared)
        pending = [task.remote(ref, *args) for args in calls]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayTaskError as err:
                    raise err.as_instanceof_cause() from None
        finally:
            for left in pending:
                ray.cancel(left, force=True)


def check_fits(nodes: list[dict], unit: str, cpus: float, gpus: float) -> None:
    """Raise :class:`ExecutorError` unless one of ``nodes`` (Ray's per-node resources) can hold
    a ``unit`` that asks for ``cpus`` CPUs and ``gpus`` GPUs: Ray would queue it for ever."""
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    most = {r: max((n.get(r, 0) for n in nodes), default=0) for r in ("CPU", "GPU")}
    short = "GPU" if most["GPU"] < gpus else "CPU" if most["CPU"] < cpus else None
    field = {"GPU": f"gpus_per_{unit}", "CPU": "cpus_per_task", None: "cpus_per_task"}[short]
    said = (
        f"No node of the Ray cluster has both ({len(nodes)} node(s))"
        if short is None
        else f"{short}s: the largest node of the Ray cluster ({len(nodes)} node(s)) has "
        f"{most[short]:g}"
    )
    raise ExecutorError(
        f"each {unit} asks for {cpus:g} CPU(s) and {gpus:g} GPU(s), so it would wait for ever. "
        f"{said}; lower executor.{field}{' (0 runs on the CPU)' if short == 'GPU' else ''} or "
        f"add a node with more {short or 'CPU'}s"
    )


def estimate_wall(unit_seconds: list[float], slots: int) -> float:
    """The wall time of ``unit_seconds`` on ``slots`` parallel slots, longest units first
    (a list schedule: each unit goes to the slot that frees first)."""
    if slots < 1:
        raise ValueError(f"slots={slots}: must be >= 1")
    free = [0.0] * min(slots, max(1, len(unit_seconds)))
    for t in sorted(unit_seconds, reverse=True):
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += t
    return max(free) if unit_seconds else 0.0


__all__ = [
    "GPU_SHARES",
    "KINDS",
    "ExecutorConfig",
    "ExecutorError",
    "check_fits",
    "check_reachable",
    "estimate_wall",
    "import_ray",
    "init_options",
    "ray_cluster",
    "run_on_ray",
]
