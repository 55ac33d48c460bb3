"""Newton's method: exact (Hessian aggregated, Cholesky on the driver) for small p, and a
trust-region Newton-CG (Steihaug; TRON as in LIBLINEAR and Photon ML) on Hessian-vector
products for any p."""
from __future__ import annotations

import numpy as np
import scipy.linalg as la

from ..objectives.penalties import soft_threshold
from ..rules import check_param
from .lbfgs import LBFGS
from .linesearch import backtracking
from .objective import Objective
from .result import Status, l1_value, optimality_norm
from .solver import Solver, SolverState


class Newton(Solver):
    """Damped Newton: solve (H + mu I) d = -g by Cholesky with the smallest mu in
    {0, 1e-10, 1e-8, ...} * max(diag H) that factors (singular directions such as the softmax's
    shared intercept shift have zero gradient, so a tiny mu leaves the step unchanged), then
    Armijo backtracking from t = 1. Every trial point returns loss, gradient and Hessian in one
    pass, so an accepted step costs one pass. If no damping up to 1e-2 factors, or the line search
    fails, the run continues with L-BFGS from the current iterate (recorded in the history)."""

    name = "newton"

    def __init__(self, memory: int = 10):
        self.fallback = LBFGS(memory=memory)

    def init(self, objective, x0):
        f, g, H = objective.loss_grad_hess(x0)
        state = SolverState(x=x0, f=f, g=g, opt_norm=optimality_norm(objective, x0, g))
        state.memory["hess"] = H
        state.memory["mode"] = "newton"
        return state

    @staticmethod
    def _direction(H, g):
        scale = max(float(np.max(np.abs(np.diag(H)), initial=0.0)), 1e-300)
        for mu in (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2):
            try:
                factor = la.cho_factor(H + mu * scale * np.eye(len(g)), lower=True, check_finite=True)
            except (la.LinAlgError, ValueError):
                continue
            d = -la.cho_solve(factor, g)
            if np.all(np.isfinite(d)):
                return d, mu
        return None, None

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        if state.memory["mode"] == "lbfgs":
            return self.fallback.step(objective, state)
        d, mu = self._direction(state.memory["hess"], state.g)
        ls = None
        if d is not None:
            ls = backtracking(lambda t: objective.loss_grad_hess(state.x + t * d), state.f, float(state.g @ d))
        if ls is None or not ls.ok:
            state.memory["mode"] = "lbfgs"
            state.memory["s"], state.memory["y"] = [], []
            state.memory.pop("hess", None)
            state.info["fallback"] = "lbfgs: Hessian not positive definite" if d is None else "lbfgs: Newton line search failed"
            return self.fallback.step(objective, state)
        x_new = state.x + ls.step * d
        state.x, state.f, state.g, state.step_size = x_new, ls.f, ls.g, ls.step
        state.memory["hess"] = ls.extra[0]
        state.opt_norm = optimality_norm(objective, x_new, ls.g)
        if mu:
            state.info["damping"] = mu
        return state


class TrustRegionNewtonCG(Solver):
    """Trust-region Newton with Steihaug-Toint truncated CG on Hessian-vector products (each CG
    iteration is one distributed Hessian-vector product, i.e. one pass). Radius update as in
    TRON (Lin & More 1999, the solver of LIBLINEAR and Photon ML), simplified: ratio thresholds
    0.25 / 0.75. The CG stops at relative residual min(0.5, sqrt(|g|)) (superlinear forcing)."""

    name = "newton-cg"

    def __init__(self, max_cg: int = 250):
        self.max_cg = int(check_param("maxCG", max_cg))

    def init(self, objective, x0):
        state = super().init(objective, x0)
        state.memory["radius"] = float(np.linalg.norm(state.g))
        return state

    def _steihaug(self, objective, x, g, radius):
        p = np.zeros_like(g)
        Hp = np.zeros_like(g)   # tracked so the model reduction costs no extra pass
        r = g.copy()
        d = -r
        rr = float(r @ r)
        forcing = min(0.5, np.sqrt(np.sqrt(rr))) * np.sqrt(rr)
        cg_iters = 0
        for cg_iters in range(1, self.max_cg + 1):
            Hd = objective.hessp(x, d)
            dHd = float(d @ Hd)
            if dHd <= 0 or np.linalg.norm(p + (rr / dHd) * d) >= radius:
                tau = self._to_boundary(p, d, radius)
                return p + tau * d, Hp + tau * Hd, cg_iters, True
            alpha = rr / dHd
            p = p + alpha * d
            Hp = Hp + alpha * Hd
            r = r + alpha * Hd
            rr_new = float(r @ r)
            if np.sqrt(rr_new) <= forcing:
                break
            d = -r + (rr_new / rr) * d
            rr = rr_new
        return p, Hp, cg_iters, False

    @staticmethod
    def _to_boundary(p, d, radius):
        a, b, c = float(d @ d), 2 * float(p @ d), float(p @ p) - radius * radius
        return (-b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        radius = state.memory["radius"]
        for _ in range(30):
            p, Hp, cg_iters, on_boundary = self._steihaug(objective, state.x, state.g, radius)
            predicted = -(float(state.g @ p) + 0.5 * float(p @ Hp))
            f_new, g_new = objective.loss_grad(state.x + p)
            actual = state.f - f_new if np.isfinite(f_new) else -np.inf
            ratio = actual / predicted if predicted > 0 else -np.inf
            state.info["cg_iterations"] = state.info.get("cg_iterations", 0) + cg_iters
            step_norm = float(np.linalg.norm(p))
            if ratio < 0.25:
                radius = 0.25 * step_norm
            elif ratio > 0.75 and on_boundary:
                radius = 2.0 * radius
            if ratio > 1e-4 and np.all(np.isfinite(g_new)):
                state.x, state.f, state.g = state.x + p, f_new, g_new
                state.step_size = step_norm
                state.opt_norm = optimality_norm(objective, state.x, g_new)
                state.memory["radius"] = radius
                return state
            if radius < 1e-14 * max(1.0, float(np.linalg.norm(state.x))):
                break
        return state.fail(Status.NO_PROGRESS, "the trust region shrank without an acceptable step")


class ProximalNewton(Solver):
    """Newton for smooth(x) + sum_j l1_j |x_j| with a small number of parameters (as glmnet and
    glum do): each iteration aggregates loss, gradient and Hessian in one pass, minimizes the
    quadratic model plus the L1 term by cyclic coordinate descent on the driver, then backtracks
    on F with the Tseng-Yun sufficient-decrease test F(x + t d) <= F(x) + c1 t Delta, where
    Delta = g.d + |x + d|_l1 - |x|_l1. Converges in a handful of passes where OWL-QN needs
    hundreds."""

    name = "newton"

    def __init__(self, max_sweeps: int = 200, inner_tol: float = 1e-12):
        self.max_sweeps = max_sweeps
        self.inner_tol = inner_tol

    def init(self, objective, x0):
        f, g, H = objective.loss_grad_hess(x0)
        state = SolverState(x=x0, f=f + l1_value(objective, x0), g=g, opt_norm=optimality_norm(objective, x0, g))
        state.memory["hess"] = H
        return state

    def _inner(self, x, g, H, l1):
        """argmin_u g.(u - x) + 0.5 (u - x)' H (u - x) + l1.|u| by cyclic coordinate descent."""
        u = x.copy()
        Hd = np.zeros_like(x)
        diag = np.maximum(np.diag(H), 1e-300)
        for _ in range(self.max_sweeps):
            biggest = 0.0
            for j in range(len(x)):
                z = u[j] - (g[j] + Hd[j]) / diag[j]
                new = float(soft_threshold(z, l1[j] / diag[j]))
                delta = new - u[j]
                if delta != 0.0:
                    u[j] = new
                    Hd += delta * H[:, j]
                    biggest = max(biggest, abs(delta))
            if biggest <= self.inner_tol * max(1.0, float(np.max(np.abs(u)))):
                break
        return u - x

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        l1 = objective.l1_weights
        H = state.memory["hess"]
        d = self._inner(state.x, state.g, H, l1)
        l1_now = l1_value(objective, state.x)
        delta = float(state.g @ d) + l1_value(objective, state.x + d) - l1_now
        if not delta < 0:
            return state.fail(Status.NO_PROGRESS, f"the proximal Newton model predicts no decrease ({delta:.3g})")
        t = 1.0
        for _ in range(40):
            x_t = state.x + t * d
            f, g, H_t = objective.loss_grad_hess(x_t)
            F = f + l1_value(objective, x_t)
            if np.isfinite(F) and F <= state.f + 1e-4 * t * delta:
                state.x, state.f, state.g, state.step_size = x_t, F, g, t
                state.memory["hess"] = H_t
                state.opt_norm = optimality_norm(objective, x_t, g)
                return state
            t *= 0.5
        return state.fail(Status.NO_PROGRESS, "no sufficient decrease in 40 backtracking trials")
