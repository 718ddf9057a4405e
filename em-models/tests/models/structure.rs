//! Structure tests on the tiny fixtures: causality, KV-cache decoding equals the full forward,
//! a left-padded batch equals each sequence alone, the last-position path equals the full one.

use em_models::{Logits, ModelError};

use crate::backend_tests;
use crate::common::*;

const IDS: [u32; 9] = [5, 77, 140, 3, 299, 18, 64, 120, 7];
/// f32 vs f32 of the same math in another order (cache, padding, masks): agreement to ~1e-6 is
/// observed; 1e-4 leaves room for backend reduction orders while catching any real error (a
/// wrong position or mask moves logits by O(1)).
const TOL: f64 = 1e-4;

fn full(
    model: &em_models::Qwen2ForCausalLM,
    ids: &[u32],
    b: &TestBackend,
) -> (Vec<f32>, [usize; 3]) {
    let mut cache = model.new_cache(1, ids.len());
    to_vec3(
        model
            .forward(
                ids_tensor(&[ids.to_vec()], &b.device),
                &mut cache,
                Logits::All,
            )
            .unwrap(),
    )
}

fn as_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| f64::from(*x)).collect()
}

fn causality(b: &TestBackend) {
    for name in FIXTURES {
        let model = load(name, &b.device);
        let (base, [_, t, v]) = full(&model, &IDS, b);
        let mut changed = IDS;
        changed[5] = 250;
        let (other, _) = full(&model, &changed, b);
        // positions 0..=4 cannot see token 5
        let prefix = 5 * v;
        assert!(
            max_abs_diff(&other[..prefix], &as_f64(&base[..prefix])) == 0.0,
            "{name}: future token leaked"
        );
        // and the change does matter from position 5 on (the test can fail)
        assert!(
            max_abs_diff(&other[prefix..t * v], &as_f64(&base[prefix..t * v])) > 1e-3,
            "{name}"
        );
    }
}

fn cached_decode_equals_full_forward(b: &TestBackend) {
    for name in FIXTURES {
        let model = load(name, &b.device);
        let (expected, [_, t, v]) = full(&model, &IDS, b);
        // prefill 4 tokens, then a chunk of 2, then one at a time
        let mut cache = model.new_cache(1, 16);
        let mut got = Vec::new();
        let mut pos = 0;
        for chunk in [4, 2, 1, 1, 1] {
            let ids = IDS[pos..pos + chunk].to_vec();
            let (logits, _) = to_vec3(
                model
                    .forward(ids_tensor(&[ids], &b.device), &mut cache, Logits::All)
                    .unwrap(),
            );
            got.extend(logits);
            pos += chunk;
        }
        assert_eq!(pos, t);
        assert_eq!(cache.len(), t);
        let diff = max_abs_diff(&got, &as_f64(&expected));
        assert!(diff <= TOL, "{}: {name} cached vs full: {diff:e}", b.name);
        assert_eq!(got.len(), t * v);
    }
}

fn last_position_path_equals_full(b: &TestBackend) {
    let model = load("qwen2-untied", &b.device);
    let (expected, [_, t, v]) = full(&model, &IDS, b);
    let mut cache = model.new_cache(1, 16);
    let (last, dims) = to_vec3(
        model
            .forward(
                ids_tensor(&[IDS.to_vec()], &b.device),
                &mut cache,
                Logits::Last,
            )
            .unwrap(),
    );
    assert_eq!(dims, [1, 1, v]);
    assert!(max_abs_diff(&last, &as_f64(&expected[(t - 1) * v..])) <= TOL);
}

fn left_padded_batch_equals_each_alone(b: &TestBackend) {
    let pad = 0u32;
    let short = IDS[..5].to_vec();
    let long = IDS.to_vec();
    for name in FIXTURES {
        let model = load(name, &b.device);
        let (alone_short, [_, _, v]) = full(&model, &short, b);
        let (alone_long, _) = full(&model, &long, b);
        let padding = long.len() - short.len();
        let mut padded_short = vec![pad; padding];
        padded_short.extend(&short);
        let mut cache = model.new_cache(2, 16);
        cache.set_left_padding(&[padding, 0]).unwrap();
        let (batch, _) = to_vec3(
            model
                .forward(
                    ids_tensor(&[padded_short, long.clone()], &b.device),
                    &mut cache,
                    Logits::All,
                )
                .unwrap(),
        );
        let row = long.len() * v;
        let diff_short = max_abs_diff(&batch[padding * v..row], &as_f64(&alone_short));
        let diff_long = max_abs_diff(&batch[row..], &as_f64(&alone_long));
        assert!(
            diff_short <= TOL && diff_long <= TOL,
            "{}: {name}: {diff_short:e} {diff_long:e}",
            b.name
        );

        // decoding one more token for both rows keeps agreeing
        let next = [42u32, 43];
        let (step, _) = to_vec3(
            model
                .forward(
                    ids_tensor(&[vec![next[0]], vec![next[1]]], &b.device),
                    &mut cache,
                    Logits::Last,
                )
                .unwrap(),
        );
        let mut s = short.clone();
        s.push(next[0]);
        let mut l = long.clone();
        l.push(next[1]);
        let (alone_s, [_, ts, _]) = full(&model, &s, b);
        let (alone_l, [_, tl, _]) = full(&model, &l, b);
        let d0 = max_abs_diff(&step[..v], &as_f64(&alone_s[(ts - 1) * v..]));
        let d1 = max_abs_diff(&step[v..], &as_f64(&alone_l[(tl - 1) * v..]));
        assert!(
            d0 <= TOL && d1 <= TOL,
            "{}: {name} padded decode: {d0:e} {d1:e}",
            b.name
        );
    }
}

/// Dropping rows from a padded batch's cache (what a generator does when sequences finish):
/// the kept rows, in their new order, decode exactly as each sequence alone.
fn retained_rows_decode_as_each_alone(b: &TestBackend) {
    let model = load("qwen2-tied", &b.device);
    let rows = [IDS[..4].to_vec(), IDS[..7].to_vec(), IDS.to_vec()];
    let width = IDS.len();
    let padding: Vec<usize> = rows.iter().map(|r| width - r.len()).collect();
    let padded: Vec<Vec<u32>> = rows
        .iter()
        .map(|r| {
            let mut p = vec![0u32; width - r.len()];
            p.extend(r);
            p
        })
        .collect();
    let mut cache = model.new_cache(3, 16);
    cache.set_left_padding(&padding).unwrap();
    model
        .forward(ids_tensor(&padded, &b.device), &mut cache, Logits::Last)
        .unwrap();
    // keep sequences 2 and 0, in that order
    cache.retain_rows(&[2, 0]).unwrap();
    assert_eq!(cache.batch(), 2);
    assert_eq!(cache.left_padding(), &[padding[2], padding[0]]);
    let next = [11u32, 12];
    let (step, [_, _, v]) = to_vec3(
        model
            .forward(
                ids_tensor(&[vec![next[0]], vec![next[1]]], &b.device),
                &mut cache,
                Logits::Last,
            )
            .unwrap(),
    );
    for (i, (seq, token)) in [(&rows[2], next[0]), (&rows[0], next[1])]
        .into_iter()
        .enumerate()
    {
        let mut ids = seq.clone();
        ids.push(token);
        let (alone, [_, t, _]) = full(&model, &ids, b);
        let d = max_abs_diff(&step[i * v..(i + 1) * v], &as_f64(&alone[(t - 1) * v..]));
        assert!(d <= TOL, "{}: kept row {i}: {d:e}", b.name);
    }
    for bad in [&[][..], &[0, 0][..], &[2][..]] {
        assert!(
            matches!(cache.retain_rows(bad), Err(ModelError::Batch(_))),
            "{bad:?}"
        );
    }
}

fn context_overflow_is_an_error(b: &TestBackend) {
    let model = load("qwen2-tied", &b.device);
    let mut cache = model.new_cache(1, 4);
    let err = model
        .forward(
            ids_tensor(&[IDS.to_vec()], &b.device),
            &mut cache,
            Logits::Last,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            ModelError::ContextOverflow {
                needed: 9,
                capacity: 4
            }
        ),
        "{err}"
    );
    assert!(
        cache.is_empty(),
        "a rejected forward must leave the cache untouched"
    );
    let err = model.forward(
        ids_tensor(&[IDS[..3].to_vec(), IDS[..3].to_vec()], &b.device),
        &mut cache,
        Logits::Last,
    );
    assert!(matches!(err, Err(ModelError::Batch(_))));
}

fn truncate_and_redecode(b: &TestBackend) {
    let model = load("llama", &b.device);
    let (expected, [_, t, v]) = full(&model, &IDS, b);
    let mut cache = model.new_cache(1, 16);
    model
        .forward(
            ids_tensor(&[IDS.to_vec()], &b.device),
            &mut cache,
            Logits::Last,
        )
        .unwrap();
    cache.truncate(t - 2).unwrap();
    let (again, _) = to_vec3(
        model
            .forward(
                ids_tensor(&[IDS[t - 2..].to_vec()], &b.device),
                &mut cache,
                Logits::All,
            )
            .unwrap(),
    );
    assert!(max_abs_diff(&again, &as_f64(&expected[(t - 2) * v..])) <= TOL);
    assert!(cache.truncate(t + 1).is_err());
    cache.reset();
    assert!(cache.is_empty());
}

backend_tests!(
    causality,
    cached_decode_equals_full_forward,
    last_position_path_equals_full,
    left_padded_batch_equals_each_alone,
    retained_rows_decode_as_each_alone,
    context_overflow_is_an_error,
    truncate_and_redecode,
);

/// On flex, decode-sized inputs (at most 8 rows) take the CPU fast path (`kernels`: weights
/// read in place, in their stored width, widened exactly and accumulated in f32) and prefill
/// chunks of more than 8 rows with 16-bit weights take `kernels::matmul_widened` (panels widened
/// to f32, gemm); f32 prefill and the training forward take burn's matmul.
///
/// The oracle for 16-bit weights is the f32 model holding the same values (saved, reloaded as
/// f32) run through burn's path: both CPU paths compute exactly that model's arithmetic, so
/// decoding one token at a time and prefilling 12 rows at once with f16/bf16 weights both give
/// its logits up to f32 rounding. For f32 weights the fast decode equals the plain full
/// forward. Tied and untied heads.
#[cfg(feature = "flex")]
#[test]
fn cpu_products_equal_the_f32_twin() {
    use burn::tensor::DType;
    use em_models::testing::{Tiny, tiny_config};
    use em_models::{LoadOptions, Qwen2ForCausalLM, SaveOptions};
    let device = burn::tensor::Device::flex();
    let ids: Vec<u32> = (0..12).map(|i| (i * 37 + 5) % 320).collect();
    // Logits of one 12-row call (> 8 rows: burn's path) or of 12 one-token calls (fast path).
    let run = |model: &Qwen2ForCausalLM, one_by_one: bool| -> Vec<f32> {
        let mut cache = model.new_cache(1, 16);
        let calls: Vec<Vec<u32>> = if one_by_one {
            ids.iter().map(|&id| vec![id]).collect()
        } else {
            vec![ids.clone()]
        };
        let mut out = Vec::new();
        for call in calls {
            let logits = model
                .forward(ids_tensor(&[call], &device), &mut cache, Logits::All)
                .unwrap();
            out.extend(to_vec3(logits).0);
        }
        out
    };
    for (kind, tie) in [(Tiny::Qwen2Untied, false), (Tiny::Qwen2Tied, true)] {
        let mut config = tiny_config(kind).unwrap();
        config.hidden_size = 256;
        config.intermediate_size = 384;
        config.tie_word_embeddings = tie;
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let model = config.init(&device, dtype, 3).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let saved = dir.path().join("model");
            model
                .save_pretrained(&config, None, &saved, &SaveOptions::default())
                .unwrap();
            let twin =
                Qwen2ForCausalLM::from_dir(&saved, &device, &LoadOptions { dtype: DType::F32 })
                    .unwrap();
            let oracle = as_f64(&run(&twin, false));
            let scale = oracle.iter().fold(1f64, |m, x| m.max(x.abs()));
            let fast = max_abs_diff(&run(&model, true), &oracle);
            assert!(
                fast <= 5e-5 * scale,
                "{dtype:?} tie {tie}: fast decode off by {fast:e} (scale {scale})"
            );
            let prefill = max_abs_diff(&run(&model, false), &oracle);
            assert!(
                prefill <= 5e-5 * scale,
                "{dtype:?} tie {tie}: 12-row prefill off by {prefill:e} (scale {scale})"
            );
        }
    }
}
