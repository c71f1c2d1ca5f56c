"""Learning-rate schedules: constant, inverse scaling and cosine, each with linear warm-up.

A schedule maps the global step ``t`` (0-based, counted over all epochs; the
same number on every rank) to a learning rate.  During the first
``warmup_steps`` steps the rate rises linearly from ``eta0 / warmup_steps`` to
``eta0``; afterwards, with ``s = t - warmup_steps`` and ``S = total_steps -
warmup_steps``:

* ``constant``:   ``eta0``
* ``invscaling``: ``eta0 / (1 + s) ** power_t``
* ``cosine``:     ``eta_min + (eta0 - eta_min) * (1 + cos(pi * s / S)) / 2``

Linear scaling rule (Goyal et al., 2017): when the global batch grows from
``B0`` to ``B = k * B0`` (for example because more ranks each keep their local
batch), multiply ``eta0`` by ``k`` and use a few epochs of warm-up;
:func:`linear_scaled_eta0` computes this.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "invscaling", "cosine")


def linear_scaled_eta0(base_eta0: float, base_batch_size: int, global_batch_size: int) -> float:
    """The linear scaling rule: ``base_eta0 * global_batch_size / base_batch_size``.

    Parameters
    ----------
    base_eta0 : float
        Learning rate tuned at ``base_batch_size``.
    base_batch_size : int
        Global batch size at which ``base_eta0`` was tuned.
    global_batch_size : int
        The global batch size of the run (all ranks together).

    Returns
    -------
    float
        The scaled learning rate.
    """
    if base_batch_size <= 0 or global_batch_size <= 0:
        raise ValueError("batch sizes must be positive")
    return base_eta0 * global_batch_size / base_batch_size


class Schedule:
    """A learning-rate schedule.

    Parameters
    ----------
    name : {"constant", "invscaling", "cosine"}
        Shape of the schedule after warm-up.
    eta0 : float
        Peak learning rate.
    total_steps : int
        Steps of the whole run (needed by ``cosine``).
    warmup_steps : int
        Length of the linear warm-up.
    power_t : float
        Exponent of ``invscaling``.
    eta_min : float
        Final rate of ``cosine``.
    """

    def __init__(
        self,
        name: str,
        eta0: float,
        total_steps: int = 1,
        warmup_steps: int = 0,
        power_t: float = 0.5,
        eta_min: float = 0.0,
    ) -> None:
        if name not in SCHEDULES:
            raise ValueError(f"learning_rate must be one of {', '.join(SCHEDULES)}; got {name!r}")
        if not eta0 > 0:
            raise ValueError(f"eta0 must be > 0, got {eta0!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps!r}")
        self.name = name
        self.eta0 = float(eta0)
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.power_t = float(power_t)
        self.eta_min = float(eta_min)

    def __call__(self, t: int) -> float:
        """Learning rate at global step ``t``."""
        if t < self.warmup_steps:
            return self.eta0 * (t + 1) / self.warmup_steps
        s = t - self.warmup_steps
        if self.name == "constant":
            return self.eta0
        if self.name == "invscaling":
            return self.eta0 / (1.0 + s) ** self.power_t
        span = max(1, self.total_steps - self.warmup_steps)
        frac = min(1.0, s / span)
        return self.eta_min + (self.eta0 - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * frac))
