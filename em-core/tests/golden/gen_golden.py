"""Golden values for em-core's tests, from numpy in float64 (an implementation independent of
em-core and of its Rust f64 reference).

Regenerate (from the repository root):
    python3 -m pip install -r em-core/tests/golden/requirements.txt
    python3 em-core/tests/golden/gen_golden.py > em-core/tests/golden/golden.json

Inputs are drawn from numpy's PCG64 with fixed seeds and rounded to float32 (the values the
device sees); every expected value is computed in float64 from those rounded inputs.
"""
import json

import numpy as np


def log_softmax(z):
    m = np.max(z, axis=-1, keepdims=True)
    return z - (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))


def entropy(z):
    lp = log_softmax(z)
    p = np.exp(lp)
    return -np.sum(np.where(p > 0, p * lp, 0.0), axis=-1)


def entropy_grad(z):
    lp = log_softmax(z)
    p = np.exp(lp)
    h = entropy(z)[..., None]
    return np.where(p > 0, -p * (lp + h), 0.0)


def kl(zr, z):
    lr, lq = log_softmax(zr), log_softmax(z)
    pr = np.exp(lr)
    return np.sum(np.where(pr > 0, pr * (lr - lq), 0.0), axis=-1)


def k3(logp, ref_logp):
    d = np.clip(ref_logp - logp, -20.0, 20.0)
    return np.clip(np.expm1(d) - d, -10.0, 10.0)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def main():
    rng = np.random.Generator(np.random.PCG64(20250521))
    rows, vocab = 6, 257
    scales = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0])[:, None]
    logits = f32(rng.standard_normal((rows, vocab)) * scales)
    other = f32(logits + rng.standard_normal((rows, vocab)) * 0.7)
    batch, seq = 2, 3
    ids = rng.integers(0, vocab, size=(batch, seq))
    lp = log_softmax(logits.reshape(batch, seq, vocab))
    chosen = np.take_along_axis(lp, ids[..., None], axis=-1)[..., 0]
    logp = f32(rng.uniform(-6, 0, size=(batch, seq)))
    ref_logp = f32(logp + rng.normal(0, 0.5, size=(batch, seq)))
    out = {
        "generator": "em-core/tests/golden/gen_golden.py (numpy %s)" % np.__version__,
        "vocab": vocab,
        "logits": logits.ravel().tolist(),
        "other_logits": other.ravel().tolist(),
        "entropy": entropy(logits).tolist(),
        "entropy_grad": entropy_grad(logits).ravel().tolist(),
        "kl_logits_other": kl(logits, other).tolist(),
        "ids": ids.ravel().tolist(),
        "token_log_probs": chosen.ravel().tolist(),
        "logp": logp.ravel().tolist(),
        "ref_logp": ref_logp.ravel().tolist(),
        "k3": k3(logp, ref_logp).ravel().tolist(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
