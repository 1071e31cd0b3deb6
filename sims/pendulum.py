"""Inverted double pendulum on a cart (MuJoCo, gymnasium's model) for closed-loop policy tests.

The plant is gymnasium's `InvertedDoublePendulum` MuJoCo model (cart on a ±1 m rail, two 0.6 m
poles, one motor, gear 500, command u ∈ [-1, 1]), stepped here directly through `mujoco` at the
control rate (physics timestep = 1 / rate_hz, one implicit-fast Euler step per control tick) instead of through
`env.step`, so that the tick rate is ours (gymnasium's env runs at 20 Hz with frame_skip 5).

    plant = PendulumBatch(n=8, rate_hz=200, seed=0)       # n independent robots, one MjData each
    x = plant.state()                                    # (n, 6) full state: qpos (3), qvel (3)
    o = plant.observe()                                  # (n, 3) what a policy sees (see ObsModel)
    plant.step(u)                                        # u (n,) commands, applied for one tick
    expert = LQRExpert(plant.model)                      # u = clip(-G x) from the linearisation

Observations are partial and noisy on purpose (ObsModel): joint positions only (no velocities),
Gaussian sensor noise and a delay of `delay` ticks, scaled by `scale` so that they are O(1). A
memoryless map from one such observation to a command cannot stabilise the pendulum (it needs the
velocities, i.e. differences over time), so the policy has to carry memory.

A robot has fallen when its tip drops below `TIP_FALL_Z` (gymnasium's termination rule, tip height
1.2 m when upright); fallen robots are frozen and report `fallen`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from essm_stream.errors import ConfigError

log = logging.getLogger(__name__)

TIP_FALL_Z = 1.0         # gymnasium InvertedDoublePendulum terminates when the tip's z <= 1
# Hand-over: for the first WARMUP ticks of an episode the full-state expert holds the robot while
# the policy already reads the observation stream (its commands are not applied), as a robot is held
# upright before its controller takes over. Without it a policy starts from an empty history and its
# velocity estimate at t = 0 is a step from zero: its first command kicks the pendulum over.
WARMUP = 64
NQ = 3                   # cart x, hinge 1, hinge 2
NX = 6                   # qpos + qvel


def _mujoco():
    try:
        import mujoco
    except ImportError as e:      # the [sim] extra is not installed
        raise ConfigError("the robot simulation needs MuJoCo: pip install 'essm-stream[sim]' "
                          "(mujoco, gymnasium[mujoco])") from e
    return mujoco


def model_xml_path() -> str:
    """gymnasium's inverted_double_pendulum.xml (installed with gymnasium, never downloaded)."""
    try:
        import gymnasium.envs.mujoco as gm
    except ImportError as e:
        raise ConfigError("the robot simulation needs gymnasium[mujoco]: pip install 'essm-stream[sim]'") from e
    path = os.path.join(os.path.dirname(gm.__file__), "assets", "inverted_double_pendulum.xml")
    if not os.path.isfile(path):
        raise ConfigError(f"gymnasium's pendulum model is missing at {path}")
    return path


def load_model(rate_hz: float = 200.0):
    """The MuJoCo model with its physics timestep set to one control tick."""
    mujoco = _mujoco()
    if not 20.0 <= rate_hz <= 2000.0:
        raise ConfigError(f"rate_hz must be in [20, 2000] Hz, got {rate_hz}")
    m = mujoco.MjModel.from_xml_path(model_xml_path())
    m.opt.timestep = 1.0 / rate_hz
    # mjd_transitionFD does not support RK4 (the XML's choice); semi-implicit Euler at >= 200 Hz is
    # accurate here and the expert is linearised on exactly the integrator the plant runs.
    m.opt.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    return m


@dataclass
class ObsModel:
    """Joint positions only, + N(0, noise²) per reading, delayed by `delay` ticks, times `scale`."""
    noise: float = 0.004         # m / rad (a coarse encoder: ~1/1500 of a turn)
    delay: int = 2               # ticks between a reading and its arrival at the policy
    scale: float = 10.0          # so that observations are O(1)

    def __post_init__(self):
        if self.noise < 0 or self.delay < 0 or self.delay > 8 or self.scale <= 0:
            raise ConfigError(f"ObsModel needs noise >= 0, 0 <= delay <= 8, scale > 0; got {self}")


class PendulumBatch:
    """n independent pendulums (one MjData each) on one model, stepped in lockstep."""

    def __init__(self, n: int = 1, rate_hz: float = 200.0, obs: ObsModel | None = None, seed: int = 0,
                 init_noise: float = 0.1, model=None, episodes=None):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n must be an int >= 1, got {n!r}")
        self.mj = _mujoco()
        self.model = model if model is not None else load_model(rate_hz)
        self.rate_hz = 1.0 / self.model.opt.timestep
        self.n, self.obs_model = int(n), obs or ObsModel()
        self.init_noise = float(init_noise)
        self.datas = [self.mj.MjData(self.model) for _ in range(self.n)]
        self._tip = self.mj.mj_name2id(self.model, self.mj.mjtObj.mjOBJ_SITE, "tip")
        self._poles = [self.mj.mj_name2id(self.model, self.mj.mjtObj.mjOBJ_BODY, b) for b in ("pole", "pole2")]
        self.reset(seed, episodes)

    def reset(self, seed: int = 0, episodes=None) -> None:
        """Start near upright: qpos, qvel ~ U(-init_noise, init_noise) (gymnasium draws 0.1 too).

        Robot i starts from episode `episodes[i]` (default i) of `seed`: robots given the same
        episode id start from the same state, whatever the batch (common random numbers)."""
        self.rng = np.random.default_rng((seed, 1))
        ids = np.arange(self.n) if episodes is None else np.asarray(episodes)
        if ids.shape != (self.n,):
            raise ConfigError(f"episodes must give one id per robot ({self.n}), got shape {ids.shape}")
        for d, e in zip(self.datas, ids):
            r = np.random.default_rng((seed, 2, int(e)))
            self.mj.mj_resetData(self.model, d)
            d.qpos[:] = r.uniform(-self.init_noise, self.init_noise, NQ)
            d.qvel[:] = r.uniform(-self.init_noise, self.init_noise, NQ)
            self.mj.mj_forward(self.model, d)
        self.fallen = np.zeros(self.n, bool)
        self.t = 0
        self._buf = [self._read() for _ in range(self.obs_model.delay + 1)]   # readings in flight

    def state(self) -> np.ndarray:
        """(n, 6) full state qpos, qvel (what the expert sees)."""
        return np.array([np.concatenate([d.qpos, d.qvel]) for d in self.datas])

    def recoverable(self) -> np.ndarray:
        """(n,) robots up and within 0.5 rad of upright (lower pole and upper pole, absolute)."""
        q = np.array([d.qpos[1:3] for d in self.datas])
        return ~self.fallen & (np.abs(q[:, 0]) < 0.5) & (np.abs(q[:, 0] + q[:, 1]) < 0.5)

    def tip_z(self) -> np.ndarray:
        return np.array([d.site_xpos[self._tip, 2] for d in self.datas])

    def _read(self) -> np.ndarray:
        q = np.array([d.qpos.copy() for d in self.datas])
        return q + self.obs_model.noise * self.rng.standard_normal(q.shape)

    def observe(self) -> np.ndarray:
        """(n, 3) the reading taken `delay` ticks ago, scaled (what a policy sees this tick)."""
        return self.obs_model.scale * self._buf[0]

    def push(self, forces: np.ndarray) -> None:
        """External horizontal force (N) on the upper pole of each robot, held until the next push."""
        for d, f in zip(self.datas, np.broadcast_to(np.asarray(forces, float), (self.n,))):
            d.xfrc_applied[self._poles[1], 0] = f

    def step(self, u: np.ndarray) -> None:
        """Apply commands u (n,) in [-1, 1] for one tick; fallen robots stay frozen."""
        u = np.clip(np.broadcast_to(np.asarray(u, float), (self.n,)), -1.0, 1.0)
        for i, d in enumerate(self.datas):
            if self.fallen[i]:
                continue
            d.ctrl[0] = u[i]
            self.mj.mj_step(self.model, d)
        self.fallen |= self.tip_z() <= TIP_FALL_Z
        self.t += 1
        self._buf.pop(0)
        self._buf.append(self._read())


class LQRExpert:
    """Discrete LQR on the MuJoCo model linearised at upright (mjd_transitionFD, solve_discrete_are).

    Full-state feedback u = clip(-G x, -1, 1). Q weights the angles most, R the command in its
    [-1, 1] units; G and the linearisation are kept (`A`, `B`, `G`) for the record.
    """

    def __init__(self, model, q=(1.0, 30.0, 30.0, 0.1, 1.0, 1.0), r: float = 1.0):
        import scipy.linalg
        mj = _mujoco()
        d = mj.MjData(model)
        mj.mj_resetData(model, d)
        mj.mj_forward(model, d)
        nx = 2 * model.nv + model.na
        A, B = np.zeros((nx, nx)), np.zeros((nx, model.nu))
        mj.mjd_transitionFD(model, d, 1e-6, True, A, B, None, None)
        Q, R = np.diag(np.asarray(q, float)), np.array([[float(r)]])
        P = scipy.linalg.solve_discrete_are(A, B, Q, R)
        self.A, self.B, self.Q, self.R = A, B, Q, R
        self.G = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)        # (1, 6)
        rho = max(abs(np.linalg.eigvals(A - B @ self.G)))
        if not rho < 1:
            raise ConfigError(f"LQR closed loop is not stable (spectral radius {rho:.4f})")
        log.debug("LQR closed-loop spectral radius %.4f", rho)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (n, 6) -> u (n,)."""
        return np.clip(-(np.atleast_2d(x) @ self.G.T)[:, 0], -1.0, 1.0)

    def stage_cost(self, x: np.ndarray, u: np.ndarray) -> np.ndarray:
        """x' Q x + u' R u per robot (the LQR objective, per tick)."""
        x = np.atleast_2d(x)
        return np.einsum("ni,ij,nj->n", x, self.Q, x) + self.R[0, 0] * np.asarray(u) ** 2
