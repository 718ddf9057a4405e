#!/usr/bin/env python3
"""llama.cpp's side of scripts/bench-peers.sh: prefill and greedy decode speed on a GGUF.

    bench_peers_llama.py quantize SRC.gguf OUT.gguf f32|f16
        dequantizes the Q4_K_M GGUF that scripts/qwen builds the HF checkpoint from into
        all-F32 or mostly-F16 (the same weights em loads from that checkpoint)
    bench_peers_llama.py run MODEL.gguf PROMPT_IDS_JSON --new 128 --threads 2 [--warmup N]
        prints {"prefill_tok_s", "decode_tok_s", "prompt_tokens", "new_tokens", "tokens"} as JSON: the prompt's
        ids are fed in one batch, then `--new` tokens are decoded greedily one at a time (EOS
        ignored, so every engine decodes the same count); with --warmup, the prompt is fed N
        times (untimed, the cache cleared after each) first, so that the timed prefill runs warm
        (the mapped GGUF's pages faulted in, the compute buffers allocated)
"""
import argparse
import json
import sys
import time

import llama_cpp
import numpy as np


def quantize(src, out, kind):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f32": llama_cpp.LLAMA_FTYPE_ALL_F32, "f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16}[kind]
    params.allow_requantize = True
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), out.encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed with {rc}")


def last_argmax(llm):
    """The greedy token after the last eval: llama.cpp's own logits of the last position
    (`Llama.scores` is written only with `logits_all`, which would compute every prompt
    position's logits in the timed prefill)."""
    vocab = llm.n_vocab()
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))
    return int(np.argmax(logits))


def run(model, ids_path, new, threads, warmup):
    ids = json.load(open(ids_path))
    llm = llama_cpp.Llama(model_path=model, n_ctx=len(ids) + new + 8, n_batch=512,
                          n_threads=threads, n_threads_batch=threads, verbose=False, seed=0)
    for _ in range(warmup):
        llm.reset()
        llm.eval(ids)
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    t1 = time.perf_counter()
    tokens = [last_argmax(llm)]
    for _ in range(new):
        llm.eval([tokens[-1]])
        tokens.append(last_argmax(llm))
    t2 = time.perf_counter()
    print(json.dumps({"prefill_tok_s": len(ids) / (t1 - t0), "decode_tok_s": new / (t2 - t1),
                      "prompt_tokens": len(ids), "new_tokens": new, "tokens": tokens}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("src")
    q.add_argument("out")
    q.add_argument("kind", choices=["f32", "f16"])
    r = sub.add_parser("run")
    r.add_argument("model")
    r.add_argument("ids")
    r.add_argument("--new", type=int, default=128)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--warmup", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "quantize":
        quantize(a.src, a.out, a.kind)
    else:
        run(a.model, a.ids, a.new, a.threads, a.warmup)


if __name__ == "__main__":
    main()
