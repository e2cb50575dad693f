"""The classifier two-sample test in PyTorch: the convnet of gan_common.c2st, from the same initial
weights, trained with torch's Adam on the same minibatches as gan_jax.c2st, then evaluated on the
test half. Kernels are converted at the boundary (HWIO -> OIHW) and the (B, 32, H/4, W/4) map is
flattened in NHWC order, so the head sees the vector the JAX network sees."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gan_common.c2st import C2stPlan, plan, result

Params = dict[str, torch.Tensor]


def to_torch(params: dict[str, np.ndarray]) -> Params:
    """gan_common.c2st.init_params' arrays as trainable tensors: conv kernels OIHW, the head (in, out) as given."""
    out = {}
    for name, value in params.items():
        t = torch.from_numpy(np.array(value, np.float32))  # a copy: the plan's arrays stay as they are
        if t.ndim == 4:
            t = t.permute(3, 2, 0, 1).contiguous()  # HWIO -> OIHW
        out[name] = t.requires_grad_()
    return out


def logits(params: Params, x: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """(B, H, W, C) -> (B,) logits of "generated"."""
    h = x.permute(0, 3, 1, 2)  # (B, C, H, W)
    for name in ("conv1", "conv2"):
        h = F.conv2d(h, params[f"{name}.kernel"], params[f"{name}.bias"], stride=2, padding=1)
        h = F.leaky_relu(h, negative_slope)  # (B, 16, H/2, W/2), then (B, 32, H/4, W/4)
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)  # flattened (h, w, c) as the JAX network does: the head's rows
    return (h @ params["head.kernel"] + params["head.bias"])[:, 0]


def train(params: Params, x: torch.Tensor, y: torch.Tensor, order: np.ndarray, lr: float,
          negative_slope: float) -> Params:
    """Adam on the mean logistic loss, one step per row of `order` (steps, B); updates `params` in place."""
    opt = torch.optim.Adam(params.values(), lr=lr)  # betas (0.9, 0.999), eps 1e-8: optax.adam's defaults
    for rows in torch.from_numpy(order.astype(np.int64)):
        loss = F.binary_cross_entropy_with_logits(logits(params, x[rows], negative_slope), y[rows])  # logits: stable
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return params


@torch.no_grad()
def predict(params: Params, x: torch.Tensor, negative_slope: float, batch: int = 1000) -> np.ndarray:
    """(N, H, W, C) -> (N,) 0/1 predictions, 1 = generated (a logit of exactly 0 counts as real)."""
    return np.concatenate([(logits(params, x[s : s + batch], negative_slope) > 0).float().numpy()
                           for s in range(0, x.shape[0], batch)])


def train_and_predict(p: C2stPlan) -> np.ndarray:
    """A gan_common.c2st.C2stPlan's test-half predictions (2t,) after training on its training half."""
    spec = p.spec
    params = train(to_torch(p.params), torch.from_numpy(p.x_train), torch.from_numpy(p.y_train), p.order, spec.lr,
                   spec.negative_slope)
    return predict(params, torch.from_numpy(p.x_test), spec.negative_slope)


def c2st(real: np.ndarray, fake: np.ndarray, seed: int = 0) -> dict[str, float | int]:
    """C2ST of (N, H, W, C) real against (M, H, W, C) generated float images: accuracy on the held-out
    half, its 95% interval, the p-value of "indistinguishable" and the test-half size (gan_common.c2st)."""
    p = plan(real, fake, seed)
    return result(train_and_predict(p), p.y_test)
