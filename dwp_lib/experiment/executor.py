"""Where a stage's units (source nets, grid cells) run: here, in worker processes or as Ray tasks;
they seed themselves, so no result (nor the key) depends on it. Ray: pip install 'dwp_lib[ray]'."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ConfigValueError, check_fields
from .names import ExperimentError

KINDS = ("local", "ray")
#: A task's GPU share when unset and the cluster has GPUs: a paper-size source net keeps one GPU
#: busy; a grid cell (a small Bayesian CNN) leaves most of one idle, so four share it.
GPU_SHARES = {"net": 1.0, "cell": 0.25}
#: the ports of an address without one: Ray's GCS (``host``) and Ray Client (``ray://host``)
RAY_PORTS = {"gcs": 6379, "client": 10001}


class ExecutorError(ExperimentError):
    """The executor cannot run: Ray missing, its cluster unreachable or too small for a unit."""


@dataclass
class ExecutorConfig:
    """Where units run. ``address``: ``None`` starts a local Ray cluster, ``auto`` joins the
    running one; ``gpus_per_*``: a unit's GPU share (``None``: :data:`GPU_SHARES`)."""

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
        if self.kind not in KINDS:
            raise ConfigValueError(f"kind={self.kind!r}: expected one of {', '.join(KINDS)}")
        for name in ("gpus_per_net", "gpus_per_cell"):
            share = getattr(self, name)
            if share is not None and (share < 0 or (share > 1 and share != int(share))):
                raise ConfigValueError(
                    f"{name}={share}: a share of one GPU in [0, 1] (0.25: four tasks per GPU) "
                    "or a whole number of GPUs"
                )
        self.address = self.address or None  # "" too: start a local cluster
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
        """The GPU share a ``unit`` (``net`` or ``cell``) asks for."""
        if (share := getattr(self, f"gpus_per_{unit}")) is None:
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
            "pip install 'dwp_lib[ray]' (or pip install ray), or leave executor.kind=local"
        ) from None
    return ray


def init_options(cfg: ExecutorConfig) -> dict[str, Any]:
    """The ``ray.init`` arguments: a local loopback-only cluster, or the one at ``address``."""
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "WARNING"}
    env = {"DWP_PROGRESS": "0"}  # a task's progress bars would reach this terminal line by line
    if cfg.address is None:
        kwargs.update(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, _node_ip_address="127.0.0.1")
        # Ray starts its workers at niceness 15: on a machine that also runs other work, that
        # makes a unit several times slower than in a local worker process (measured: 4x)
        kwargs["_system_config"] = {"worker_niceness": 0}
        # the workers import dwp_lib from this checkout (installed or not)
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    else:
        kwargs["address"] = cfg.address
    kwargs["runtime_env"] = {"env_vars": env}
    return kwargs


def split_address(address: str, name: str = "executor.address") -> tuple[str, int]:
    """``(host, port)`` of a Ray address ``host[:port]`` or ``ray://host[:port]``."""
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
    """Raise unless ``address`` answers within ``timeout`` s (Ray would retry for ever)."""
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
    """The Ray cluster of ``cfg`` for the ``with`` block (one started here stops at its end)."""
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
    cfg: ExecutorConfig, fn: Callable[..., Any], shared: Any, calls: Iterable[tuple], *, unit: str
) -> Iterator[Any]:
    """``fn(shared, *args)`` for every ``args`` of ``calls`` as Ray tasks, yielded as they
    finish; when the caller stops early, the tasks left are cancelled."""
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
    """Raise unless a node can hold a unit of ``cpus`` and ``gpus`` (Ray would queue it)."""
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
    """The wall time of ``unit_seconds`` on ``slots`` slots, longest first to the first free."""
    if slots < 1:
        raise ValueError(f"slots={slots}: must be >= 1")
    free = [0.0] * min(slots, max(1, len(unit_seconds)))
    for t in sorted(unit_seconds, reverse=True):
        i = min(range(len(free)), key=free.__getitem__)
        free[i] += t
    return max(free) if unit_seconds else 0.0
