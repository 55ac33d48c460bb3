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
from .objective import DiagonalCurvature, Objective, PassCosts
from .result import Status, l1_value, optimality_norm, pseudo_gradient, rounding_error
from .solver import Solver, SolverState


class Newton(Solver):
    """Damped Newton: solve (H + mu I) d = -g by Cholesky with the smallest mu in
    {0, 1e-10, 1e-8, ...} * max(diag H) that factors (singular directions such as the softmax's
    shared intercept shift have zero gradient, so a tiny mu leaves the step unchanged), then
    Armijo backtracking from t = 1. The full step's trial returns loss, gradient and Hessian in
    one pass, so an accepted full step costs one pass; where a Hessian pass is dear (see
    LAZY_HESSIAN_RATIO) shorter trials return loss and gradient only, the accepted one's
    Hessian costs one more pass, and a Hessian serves the following steps while they contract
    (``reuse_hessian``, REUSE_CONTRACTION; a reused one that finds no step is replaced by the
    current iterate's before anything else is tried). Near the optimum, where F's decrease is
    below its rounding error, a step that lowers the gradient norm is taken (Newton still converges
    quadratically in the gradient); when no step can show progress any more the run ends with
    PRECISION_LIMIT. If no damping up to 1e-2 factors, or the line search fails above the
    rounding level, the run continues with L-BFGS from the current iterate (in the history)."""

    name = "newton"

    def __init__(self, memory: int = 10, reuse_hessian: bool = True):
        self.fallback = LBFGS(memory=memory)
        self.reuse_hessian = bool(reuse_hessian)

    def init(self, objective, x0):
        f, g, H = objective.loss_grad_hess(x0)
        state = SolverState(x=x0, f=f, g=g, opt_norm=optimality_norm(objective, x0, g))
        state.memory["hess"] = H
        state.memory["mode"] = "newton"
        state.memory["lazy_hessian"] = self.hessian_is_dear(objective)
        state.memory["reuse_hessian"] = self.reuse_hessian and self.hessian_is_dear(objective, with_overhead=False)
        # the Hessian in memory is the current iterate's; the first full step's trial brings its
        # own (far from the optimum the Hessian changes; see REUSE_CONTRACTION)
        state.memory["hess_age"] = 0
        state.memory["refresh_hessian"] = True
        return state

    #: backtracking trials skip the Hessian when a Hessian pass costs at least this many loss +
    #: gradient passes (each with the engine's fixed cost per pass): a step that backtracks k
    #: times then costs 2 Hessian passes and k - 1 gradient passes instead of k Hessian passes
    #: (kddcup one-hot, 4.4x: 23 iterations, 5.5 s of passes instead of 8.3 s on one thread)
    LAZY_HESSIAN_RATIO = 2.0
    #: where a Hessian pass is dear (LAZY_HESSIAN_RATIO), a Hessian serves further steps (the
    #: chord / Shamanskii variant of Newton, as KINSOL's modified Newton reuses its Jacobian)
    #: while they contract: a full step accepted that cut the optimality norm to at most this
    #: share of its value keeps the Hessian, else the next full step's trial brings a fresh one
    #: in its pass. Near the optimum a stale Hessian still contracts fast (the error of a chord
    #: step is the Hessian's change times the step); far from it, where steps are damped, every
    #: accepted point brings its own. letter (26 classes, a Hessian pass ~12-16 gradient
    #: passes), tol 1e-6: 7 passes with 7 Hessians -> 10 passes with 4.
    REUSE_CONTRACTION = 0.25
    #: steps one Hessian serves at most
    REUSE_MAX_AGE = 8

    @classmethod
    def hessian_is_dear(cls, objective, with_overhead: bool = True) -> bool:
        """Whether a Hessian pass costs at least LAZY_HESSIAN_RATIO loss + gradient passes, each
        with the engine's fixed cost per pass (``with_overhead``), or as computation alone: the
        data's shape, the same on every engine, so that reusing Hessians (which changes the
        iterates) gives the same numbers on every engine."""
        if not isinstance(objective, PassCosts):
            return False
        costs = objective.pass_costs()
        overhead = costs.get("overhead", 0.0) if with_overhead else 0.0
        return costs["hessian"] + overhead >= cls.LAZY_HESSIAN_RATIO * (costs["gradient"] + overhead)

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
        reuse = state.memory.get("reuse_hessian", False)
        # a reused Hessian's trials never bring one they would not use
        lazy = state.memory.get("lazy_hessian", False) or reuse
        stale = reuse and state.memory.get("hess_age", 0) > 0
        bring = not reuse or state.memory.get("refresh_hessian", True)
        ls, d = self._search(objective, state, lazy, bring_hessian=bring)
        if stale and (ls is None or not ls.ok) and not (ls is not None and ls.precision):
            # the reused Hessian led nowhere: the current iterate's own before giving up
            state.memory["hess"] = objective.loss_grad_hess(state.x)[2]
            state.memory["hess_age"] = 0
            ls, d = self._search(objective, state, lazy, bring_hessian=not reuse)
        if ls is not None and ls.precision:
            return state.fail(Status.PRECISION_LIMIT, "Newton step, F changes below its rounding error")
        if ls is None or not ls.ok:
            state.memory["mode"] = "lbfgs"
            state.memory["s"], state.memory["y"] = [], []
            state.memory.pop("hess", None)
            state.info["fallback"] = "lbfgs: Hessian not positive definite" if d is None else "lbfgs: Newton line search failed"
            return self.fallback.step(objective, state)
        x_new = state.x + ls.step * d
        opt_new = optimality_norm(objective, x_new, ls.g)
        contracted = ls.step == 1.0 and opt_new <= self.REUSE_CONTRACTION * state.opt_norm
        age = state.memory.get("hess_age", 0)
        if ls.extra:
            state.memory["hess"], age = ls.extra[0], 0
        elif reuse and contracted and age < self.REUSE_MAX_AGE:
            age += 1
            state.info["hessian_reused"] = True
        else:
            state.memory["hess"], age = objective.loss_grad_hess(x_new)[2], 0
        state.memory["hess_age"] = age
        # a step that contracted well lets the Hessian serve the next one too; else the next
        # full step's trial brings its own
        state.memory["refresh_hessian"] = not (contracted and age < self.REUSE_MAX_AGE)
        state.x, state.f, state.g, state.step_size = x_new, ls.f, ls.g, ls.step
        state.opt_norm = opt_new
        return state

    def _search(self, objective, state, lazy: bool, bring_hessian: bool):
        """Backtracking along the Newton direction of the Hessian in memory: (line search
        result or None when no damping factors it, direction)."""
        d, mu = self._direction(state.memory["hess"], state.g)
        if d is None:
            return None, None
        opt = state.opt_norm

        def evaluate(t):
            # the full step (accepted in most iterations) brings its Hessian in the same pass;
            # where a Hessian pass is dear, a shorter one brings only F and the gradient, and
            # its Hessian follows once accepted (or, reused, not at all: REUSE_CONTRACTION)
            if lazy and (t != 1.0 or not bring_hessian):
                return objective.loss_grad(state.x + t * d)
            return objective.loss_grad_hess(state.x + t * d)

        if mu:
            state.info["damping"] = mu
        return backtracking(evaluate, state.f, float(state.g @ d),
                            flat_ok=lambda out: optimality_norm(objective, state.x, out[1]) < 0.5 * opt), d


class TrustRegionNewtonCG(Solver):
    """Trust-region Newton with Steihaug-Toint truncated CG on Hessian-vector products (each CG
    iteration is one distributed Hessian-vector product, i.e. one pass). Radius update as in
    TRON (Lin & More 1999, the solver of LIBLINEAR and Photon ML), simplified: ratio thresholds
    0.25 / 0.75. The CG stops at relative residual min(0.5, sqrt(|g|)) (superlinear forcing).

    Preconditioned (LIBLINEAR's preconditioned TRON, Hsia, Chiang & Lin 2018) when the objective
    gives the Hessian's diagonal with its gradient (DiagonalCurvature, at no extra pass): CG runs
    on M^-1/2 H M^-1/2 with M = (1 - a) I mean(diag) + a diag, a = PRECONDITIONER_WEIGHT, and
    the trust region is measured in M's norm. Measured passes to tol 1e-6 (regParam 1e-3, raw
    units) without / with it: kddcup 50k rows 439 / 197, letter 72 / 61, a9a 60 / 60, magic
    36 / 35, bike Poisson 46 / 50."""

    name = "newton-cg"
    PRECONDITIONER_WEIGHT = 1.0

    def __init__(self, max_cg: int = 250):
        self.max_cg = int(check_param("maxCG", max_cg))

    def _preconditioned(self, objective) -> bool:
        return isinstance(objective, DiagonalCurvature) and bool(objective.has_curvature_moments)

    def _evaluate(self, objective, x):
        """(f, g, M) at x: M the preconditioner's diagonal (ones when there is none)."""
        if self._preconditioned(objective):
            f, g, diag = objective.loss_grad_diag(x)
            if np.all(np.isfinite(diag)) and np.all(diag >= 0):
                mean = max(float(np.mean(diag)), 1e-300)
                a = self.PRECONDITIONER_WEIGHT
                return f, g, (1.0 - a) * mean + a * np.maximum(diag, 1e-3 * mean)
            return f, g, np.ones_like(g)
        f, g = objective.loss_grad(x)
        return f, g, np.ones_like(g)

    def init(self, objective, x0):
        f, g, M = self._evaluate(objective, x0)
        state = SolverState(x=x0, f=f + l1_value(objective, x0), g=g, opt_norm=optimality_norm(objective, x0, g))
        state.memory["precond"] = M
        state.memory["radius"] = float(np.sqrt(g @ (g / M)))
        return state

    def _steihaug(self, objective, x, g, M, radius):
        """Approximately minimize g.p + p'Hp/2 over ||p||_M <= radius (preconditioned CG)."""
        p = np.zeros_like(g)
        Hp = np.zeros_like(g)   # tracked so the model reduction costs no extra pass
        r = g.copy()
        y = r / M
        d = -y
        ry = float(r @ y)
        rr = float(r @ r)
        forcing = min(0.5, np.sqrt(np.sqrt(rr))) * np.sqrt(rr)
        cg_iters = 0
        for cg_iters in range(1, self.max_cg + 1):
            Hd = objective.hessp(x, d)
            dHd = float(d @ Hd)
            alpha = ry / dHd if dHd > 0 else np.inf
            if dHd <= 0 or self._m_norm(p + alpha * d, M) >= radius:
                tau = self._to_boundary(p, d, M, radius)
                return p + tau * d, Hp + tau * Hd, cg_iters, True
            p = p + alpha * d
            Hp = Hp + alpha * Hd
            r = r + alpha * Hd
            if np.sqrt(float(r @ r)) <= forcing:
                break
            y = r / M
            ry_new = float(r @ y)
            d = -y + (ry_new / ry) * d
            ry = ry_new
        return p, Hp, cg_iters, False

    @staticmethod
    def _m_norm(v, M):
        return float(np.sqrt(v @ (M * v)))

    @staticmethod
    def _to_boundary(p, d, M, radius):
        a, b, c = float(d @ (M * d)), 2 * float(p @ (M * d)), float(p @ (M * p)) - radius * radius
        return (-b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        radius = state.memory["radius"]
        M = state.memory["precond"]
        noise = rounding_error(state.f)
        for _ in range(30):
            p, Hp, cg_iters, on_boundary = self._steihaug(objective, state.x, state.g, M, radius)
            predicted = -(float(state.g @ p) + 0.5 * float(p @ Hp))
            f_new, g_new, M_new = self._evaluate(objective, state.x + p)
            actual = state.f - f_new if np.isfinite(f_new) else -np.inf
            ratio = actual / predicted if predicted > 0 else -np.inf
            state.info["cg_iterations"] = state.info.get("cg_iterations", 0) + cg_iters
            if 0 < predicted < noise and np.isfinite(f_new) and abs(actual) <= noise:
                # the model's decrease is below F's rounding: judge the step by the gradient
                if optimality_norm(objective, state.x + p, g_new) < 0.5 * state.opt_norm:
                    ratio = 1.0
                else:
                    return state.fail(Status.PRECISION_LIMIT, "Newton-CG step, F changes below its rounding error")
            step_norm = self._m_norm(p, M)
            if ratio < 0.25:
                radius = 0.25 * step_norm
            elif ratio > 0.75 and on_boundary:
                radius = 2.0 * radius
            if ratio > 1e-4 and np.all(np.isfinite(g_new)):
                state.x, state.f, state.g = state.x + p, f_new, g_new
                state.step_size = float(np.linalg.norm(p))
                state.opt_norm = optimality_norm(objective, state.x, g_new)
                state.memory["radius"] = radius
                state.memory["precond"] = M_new
                return state
            if radius < 1e-14 * max(1.0, self._m_norm(state.x, M)):
                break
        return state.fail(Status.NO_PROGRESS, "the trust region shrank without an acceptable step")


def solve_l1_quadratic(x: np.ndarray, g: np.ndarray, H: np.ndarray, l1: np.ndarray, tol: float,
                       max_rounds: int = 30, sweeps: int = 5) -> tuple[np.ndarray, float]:
    """argmin_u g.(u - x) + 0.5 (u - x)' H (u - x) + sum_j l1_j |u_j| (H symmetric PSD, p x p).

    Cyclic coordinate descent finds the support and the signs (a few sweeps at a time); on the
    support S with signs s the model is a smooth quadratic, solved exactly by one linear system
    ``H_SS d_S = -(g_S + l1_S s + H_S,~S d_~S)``, which is kept when it keeps the signs and
    satisfies the optimality conditions off the support. So the answer is exact (to rounding) in
    a few rounds instead of needing CD to converge on collinear features, where it crawls
    (a9a's one-hot groups: 200 sweeps left the model 1e-9 off, and the outer Newton then took
    hundreds of 1e-18 steps). Returns (u - x, the model's optimality norm at u)."""
    u = x.copy()
    r = np.array(g, dtype=float, copy=True)           # gradient of the smooth model at u
    diag = np.maximum(np.diag(H), 1e-300)
    opt = np.inf
    for _ in range(max_rounds):
        for _ in range(sweeps):
            biggest = 0.0
            for j in range(len(x)):
                new = float(soft_threshold(u[j] - r[j] / diag[j], l1[j] / diag[j]))
                delta = new - u[j]
                if delta != 0.0:
                    u[j] = new
                    r += delta * H[:, j]
                    biggest = max(biggest, abs(delta))
            if biggest == 0.0:
                break
        support = u != 0
        if support.any():
            signs = np.sign(u[support])
            d = u - x
            rhs = -(g[support] + l1[support] * signs + H[np.ix_(support, ~support)] @ d[~support])
            H_ss = H[np.ix_(support, support)]
            try:
                d_s = la.solve(H_ss, rhs, assume_a="pos")
            except (la.LinAlgError, ValueError):
                d_s = la.lstsq(H_ss, rhs)[0]         # singular directions (softmax's shared shift)
            candidate = u.copy()
            candidate[support] = x[support] + d_s
            if np.all(np.isfinite(candidate)) and np.array_equal(np.sign(candidate[support]), signs):
                r_c = g + H @ (candidate - x)
                opt_c = float(np.max(np.abs(pseudo_gradient(r_c, candidate, l1)), initial=0.0))
                if opt_c <= max(opt, tol):
                    u, r, opt = candidate, r_c, opt_c
        opt = min(opt, float(np.max(np.abs(pseudo_gradient(r, u, l1)), initial=0.0)))
        if opt <= tol:
            break
    return u - x, opt


class ProximalNewton(Solver):
    """Newton for smooth(x) + sum_j l1_j |x_j| with a small number of parameters (as glmnet and
    glum do): each iteration aggregates loss, gradient and Hessian in one pass, minimizes the
    quadratic model plus the L1 term on the driver (:func:`solve_l1_quadratic`, to an accuracy
    that tightens with the outer optimality, as a forcing sequence), then backtracks on F with the
    Tseng-Yun sufficient-decrease test F(x + t d) <= F(x) + c1 t Delta, where Delta = g.d +
    |x + d|_l1 - |x|_l1. Converges in a handful of passes where OWL-QN needs hundreds. When
    Delta is below F's rounding error the step is judged by the pseudo-gradient instead, and a
    run that cannot move any more ends with PRECISION_LIMIT."""

    name = "newton"

    def init(self, objective, x0):
        f, g, H = objective.loss_grad_hess(x0)
        state = SolverState(x=x0, f=f + l1_value(objective, x0), g=g, opt_norm=optimality_norm(objective, x0, g))
        state.memory["hess"] = H
        return state

    def step(self, objective: Objective, state: SolverState) -> SolverState:
        l1 = objective.l1_weights
        H = state.memory["hess"]
        # inner accuracy: superlinear forcing in the outer optimality, never below rounding
        floor = 1e-15 * max(1.0, float(np.max(np.abs(state.g), initial=0.0)))
        d, inner_opt = solve_l1_quadratic(state.x, state.g, H, l1, max(min(0.1, state.opt_norm) * state.opt_norm, floor))
        state.info["inner_optimality"] = inner_opt
        l1_now = l1_value(objective, state.x)
        delta = float(state.g @ d) + l1_value(objective, state.x + d) - l1_now
        noise = rounding_error(state.f)
        if not delta < -noise:
            # the model's decrease is lost in rounding: only the pseudo-gradient can judge the step
            if not np.any(d):
                return state.fail(Status.PRECISION_LIMIT, "the proximal Newton step is zero")
            x_t = state.x + d
            f, g, H_t = objective.loss_grad_hess(x_t)
            F = f + l1_value(objective, x_t)
            if np.isfinite(F) and F <= state.f + noise and optimality_norm(objective, x_t, g) < 0.5 * state.opt_norm:
                state.x, state.f, state.g, state.step_size = x_t, F, g, 1.0
                state.memory["hess"] = H_t
                state.opt_norm = optimality_norm(objective, x_t, g)
                return state
            return state.fail(Status.PRECISION_LIMIT, "the proximal Newton model's decrease is below F's rounding")
        t = 1.0
        for _ in range(40):
            x_t = state.x + t * d
            f, g, H_t = objective.loss_grad_hess(x_t)
            F = f + l1_value(objective, x_t)
            flat = F <= state.f + noise and optimality_norm(objective, x_t, g) < 0.5 * state.opt_norm
            if np.isfinite(F) and (F <= state.f + 1e-4 * t * delta or flat):
                state.x, state.f, state.g, state.step_size = x_t, F, g, t
                state.memory["hess"] = H_t
                state.opt_norm = optimality_norm(objective, x_t, g)
                return state
            t *= 0.5
            if t * -delta < noise:
                return state.fail(Status.PRECISION_LIMIT, "proximal Newton step, F changes below its rounding error")
        return state.fail(Status.NO_PROGRESS, "no sufficient decrease in 40 backtracking trials")
