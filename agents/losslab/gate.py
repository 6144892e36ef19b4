"""The validation gate for a proposed loss.

``check_source`` reads the code without running it (``ast``), so it is safe in-process: exactly
one top-level function, with the required parameters. ``check_function`` calls the loss and
its gradient on random inputs; it runs only inside the sandbox, on the code's own function.
"""

from __future__ import annotations

import ast

from conclave.agents.losslab.losses import SIGNATURE

REQUIRED = f"def <name>({', '.join(SIGNATURE)}) -> losses of shape [batch]"


class GateError(Exception):
    pass


def check_source(code: str) -> str:
    """The name of the one function ``code`` defines; GateError says what is wrong."""
    try:
        tree = ast.parse(code)
    except SyntaxError as e:
        raise GateError(f"the code is not valid Python: {e.msg} (line {e.lineno})") from None
    defs = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if len(defs) != 1:
        names = ", ".join(d.name for d in defs) or "none"
        raise GateError(f"the code must define exactly one top-level function, {REQUIRED}; it defines {len(defs)} ({names})")
    fn = defs[0]
    if isinstance(fn, ast.AsyncFunctionDef):
        raise GateError(f"{fn.name} must be a plain function, not async")
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    if tuple(positional[:len(SIGNATURE)]) != SIGNATURE:
        raise GateError(f"{fn.name} must take ({', '.join(SIGNATURE)}) in that order; it takes ({', '.join(positional)})")
    extra = len(positional) - len(SIGNATURE)
    if extra > len(a.defaults) or any(d is None for d in a.kw_defaults):
        raise GateError(f"{fn.name}: every parameter after beta needs a default value")
    return fn.name


def check_function(fn, *, batch: int = 16, beta: float = 0.1, seed: int = 0) -> None:
    """Call ``fn`` on random log-probabilities: the loss must be a finite float tensor of shape
    [batch], with finite gradients that are not all zero."""
    import torch

    g = torch.Generator().manual_seed(seed)
    logps = [-(1 + 19 * torch.rand(batch, generator=g, dtype=torch.float32)) for _ in range(4)]
    policy_c, policy_r = (t.clone().requires_grad_(True) for t in logps[:2])
    losses = fn(policy_c, policy_r, logps[2], logps[3], beta)
    if not isinstance(losses, torch.Tensor):
        raise GateError(f"the loss returned {type(losses).__name__}, not a torch tensor")
    if tuple(losses.shape) != (batch,):
        raise GateError(f"the loss has shape {tuple(losses.shape)}; it must be [batch] = ({batch},), one loss per pair")
    if not losses.is_floating_point():
        raise GateError(f"the loss has dtype {losses.dtype}; it must be floating point")
    if not torch.isfinite(losses).all():
        raise GateError(f"the loss is not finite on random inputs: {losses.detach().tolist()[:4]} …")
    if not losses.requires_grad:
        raise GateError("the loss does not depend on the policy's log-probabilities (no gradient flows)")
    losses.mean().backward()
    grads = [t.grad for t in (policy_c, policy_r) if t.grad is not None]
    if not grads:
        raise GateError("no gradient reaches the policy's log-probabilities")
    if not all(torch.isfinite(gr).all() for gr in grads):
        raise GateError("the gradient is not finite on random inputs")
    if all(float(gr.abs().max()) == 0.0 for gr in grads):
        raise GateError("the gradient is zero everywhere on random inputs, so training would not move the policy")
