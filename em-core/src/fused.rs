//! Row-wise computations on plain flex (CPU) tensors: [`host_rows`] borrows a tensor's rows,
//! [`rows`] computes on them, [`tensor_from_rows`] returns the results as tensors;
//! [`with_pool_awake`] runs a computation of many such parallel passes on rayon's pool.
//!
//! [`crate::softmax_entropy`], [`crate::entropy()`] and [`crate::kept_entropy`] take this path
//! by themselves for plain f32 flex tensors, row by row in fused passes on rayon's threads; the
//! burn-op path stays the path of every other backend, of autodiff-tracked tensors (training)
//! and of f64. Other crates use the same three pieces for their own row loops (em-infer's
//! EM-INF).
//!
//! Why: on flex every burn op over `[rows, vocab]` is its own single-threaded pass that allocates
//! its output, and a softmax with its entropy is about ten of them (max, shift, clamp, exp, the
//! blocked sum, log, subtract, exp, multiply, sum). At batch 8 over Qwen2.5's 151,936 entries
//! that is 1.2 M values per pass. Here the same values take three passes per row (the maximum,
//! `Σ exp`, then the outputs), on all threads (rows and chunks of rows), with the sums in f64.
//!
//! Same results: the formulas are those of the generic path (the same `f32` operations for the
//! shifted logits and `log p`, and `p = exp(log p)`). Only the sums and `exp` differ: f64 sums
//! here, blocked f32 there, and [`rows::exp`] (vectorizable, within one unit in the last place)
//! instead of libm's, so the two agree to f32 rounding (`tests/suite/fused.rs` checks it against
//! the generic path on autodiff-tracked copies of the same tensors, and the f64 oracles check
//! both). A row whose maximum is not finite (NaN or +∞ logits, or no finite entry) is NaN
//! throughout, as on the generic path.
//!
//! No `unsafe`: the rows are borrowed from the tensor's storage and the results are new tensors.

use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::softmax::{KeptEntropy, SoftmaxEntropy};

/// [`crate::softmax_entropy`] of f32 logits on flex, or `None` where the generic path runs.
pub(crate) fn softmax_entropy(logits: &Tensor<2>) -> Option<SoftmaxEntropy> {
    let rows = host_rows(logits)?;
    Some(softmax_entropy_rows(&rows, &logits.device()))
}

/// [`crate::entropy()`] of f32 logits on flex, `[rows, 1]`, or `None` where the generic path
/// runs.
pub(crate) fn entropy(logits: &Tensor<2>) -> Option<Tensor<2>> {
    let rows = host_rows(logits)?;
    let h: Vec<f32> = rows
        .values()
        .par_chunks(rows.width())
        .map(rows::entropy)
        .collect();
    Some(tensor_from_rows(h, [rows.rows(), 1], &logits.device()))
}

/// [`crate::kept_entropy`] on flex, or `None` where the generic path runs.
pub(crate) fn kept_entropy(weights: &Tensor<2>, log_probs: &Tensor<2>) -> Option<KeptEntropy> {
    let (w, lp) = (host_rows(weights)?, host_rows(log_probs)?);
    let parts: Vec<[f32; 3]> = w
        .values()
        .par_chunks(w.width())
        .zip(lp.values().par_chunks(lp.width()))
        .map(|(w, lp)| rows::kept_entropy(w, lp))
        .collect();
    let (n, device) = (w.rows(), weights.device());
    let column = |i: usize| tensor_from_rows(parts.iter().map(|p| p[i]).collect(), [n, 1], &device);
    Some(KeptEntropy {
        total: column(0),
        log_total: column(1),
        entropy: column(2),
    })
}

/// The row computations on slices (one row each), with f64 sums.
///
/// A row is cut into chunks of [`rows::CHUNK`] entries, which rayon's threads take in parallel
/// (so one row of a batch-1 decode step uses every core too); each chunk's partial sums are
/// collected and added in chunk order, so a result does not depend on the thread count. Inside a
/// chunk the sums run over 8 f64 lanes, in blocks whose `exp` values are computed first (the
/// `exp` loop then vectorizes on its own, and the sums stay in registers).
pub mod rows {
    use rayon::prelude::*;

    /// Entries per chunk: the unit of the parallel split and of the partial sums.
    pub const CHUNK: usize = 8192;
    /// Entries whose `exp` values are computed before they are summed.
    pub const BLOCK: usize = 256;
    /// f64 accumulators per sum ([`accumulate`]).
    pub const LANES: usize = 8;
    /// f32 lanes of [`max_of`]: one AVX-512 register.
    const MAX_LANES: usize = 16;

    /// Work on a chunk of a row, for [`vectorized`]: the loop goes in [`Kernel::run`], which
    /// implementations mark `#[inline(always)]`, as everything it calls.
    pub trait Kernel {
        /// What the work returns.
        type Output;
        /// Does the work.
        fn run(self) -> Self::Output;
    }

    /// Runs `kernel` compiled for the widest SIMD instruction set this CPU has: AVX-512 or
    /// AVX2 on x86-64 (pulp's runtime dispatch to a `#[target_feature]` function), the
    /// target's baseline elsewhere and without the `flex` feature.
    ///
    /// Only code inlined into pulp's entry point is compiled for its instruction set, hence a
    /// trait with an `#[inline(always)]` method rather than a closure or a function: a
    /// closure's body, or the `FnOnce` shim of a function item, is a function of its own
    /// that LLVM left out of line, where it ran at baseline width (objdump of the first
    /// versions: pulp's AVX-512 entry point jumping to `FnOnce::call_once`, no zmm register).
    ///
    /// Why: a build for baseline x86-64 vectorizes these loops 4 f32 wide (SSE2); the row
    /// passes here and EM-INF's Adam pass (em-infer) run each chunk through this instead.
    /// The results do not depend on the instruction set: every loop is elementwise or works in
    /// fixed lanes, and Rust never fuses a multiplication and an addition into one FMA on its
    /// own (the fused ones, [`f32::mul_add`], are fused at every width, as libm's `fmaf` in
    /// scalar code), so the same operations run in the same order whatever the vector width
    /// (`tests/suite/fused.rs` compares against the same functions run one entry at a time).
    #[inline(always)]
    pub fn vectorized<K: Kernel>(kernel: K) -> K::Output {
        #[cfg(feature = "flex")]
        {
            pulp::Arch::new().dispatch(Wide(kernel))
        }
        #[cfg(not(feature = "flex"))]
        {
            kernel.run()
        }
    }

    /// [`vectorized`]'s kernel, as pulp runs it.
    #[cfg(feature = "flex")]
    struct Wide<K>(K);

    #[cfg(feature = "flex")]
    impl<K: Kernel> pulp::WithSimd for Wide<K> {
        type Output = K::Output;

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _simd: S) -> K::Output {
            self.0.run()
        }
    }

    /// The maximum of a slice ([`max_of`]) as a [`Kernel`].
    struct MaxOf<'a>(&'a [f32]);

    impl Kernel for MaxOf<'_> {
        type Output = f32;

        #[inline(always)]
        fn run(self) -> f32 {
            max_of(self.0)
        }
    }

    /// [`exp_sums`] as a [`Kernel`].
    struct ExpSums<'a>(&'a [f32], f32);

    impl Kernel for ExpSums<'_> {
        type Output = [f64; 2];

        #[inline(always)]
        fn run(self) -> [f64; 2] {
            exp_sums(self.0, self.1)
        }
    }

    /// [`outputs`] as a [`Kernel`].
    struct Outputs<'a> {
        z: &'a [f32],
        max: f32,
        ln_s: f32,
        log_probs: &'a mut [f32],
        probs: &'a mut [f32],
    }

    impl Kernel for Outputs<'_> {
        type Output = f64;

        #[inline(always)]
        fn run(self) -> f64 {
            outputs(self.z, self.max, self.ln_s, self.log_probs, self.probs)
        }
    }

    /// `(Σ w, Σ w·log p)` of one chunk as a [`Kernel`].
    struct KeptSums<'a>(&'a [f32], &'a [f32]);

    impl Kernel for KeptSums<'_> {
        type Output = [f64; 2];

        #[inline(always)]
        fn run(self) -> [f64; 2] {
            let mut sums = [[0f64; LANES]; 2];
            accumulate(self.0, self.1, &mut sums);
            lane_totals(sums)
        }
    }

    /// The maximum of `z`, NaN if any entry is NaN (−∞ for an empty row).
    pub fn max(z: &[f32]) -> f32 {
        let maxima = z
            .par_chunks(CHUNK)
            .map(|chunk| vectorized(MaxOf(chunk)))
            .collect::<Vec<_>>();
        max_in_order(maxima)
    }

    /// The chunks' maxima (collected in chunk order) combined into the row's: NaN if any is
    /// NaN, −∞ for none. [`max`]'s last step, and EM-INF's after its Adam pass.
    pub fn max_in_order(maxima: Vec<f32>) -> f32 {
        maxima.into_iter().fold(f32::NEG_INFINITY, |a, b| {
            if a.is_nan() || b.is_nan() {
                f32::NAN
            } else {
                a.max(b)
            }
        })
    }

    /// The maximum of `z`, NaN if any entry is NaN (−∞ for an empty slice), in
    /// `MAX_LANES` lanes so that it vectorizes (a running maximum is one long dependency
    /// chain that LLVM keeps scalar). The same value as a running maximum but for the sign of
    /// a zero maximum, which no softmax output depends on (`exp(±0) = 1`).
    ///
    /// A lane keeps the first NaN it meets (`x > m` is false against a NaN `m`), so there is
    /// one select per entry and no flag: with a separate flag per lane (`bool` or `u32`) LLVM
    /// vectorized the loop into shuffles for every register of `z` (objdump, 2026-12-06), and
    /// the maximum after EM-INF's Adam pass took a tenth of its time at batch 8.
    #[inline(always)]
    pub fn max_of(z: &[f32]) -> f32 {
        #[inline(always)]
        fn keep(m: f32, x: f32) -> f32 {
            if x > m || x.is_nan() { x } else { m }
        }
        let mut max = [f32::NEG_INFINITY; MAX_LANES];
        let blocks = z.chunks_exact(MAX_LANES);
        let rest = blocks.remainder();
        for block in blocks {
            for (m, &x) in max.iter_mut().zip(block) {
                *m = keep(*m, x);
            }
        }
        for &x in rest {
            max[0] = keep(max[0], x);
        }
        max.into_iter().fold(f32::NEG_INFINITY, keep)
    }

    /// `z − max`, with −∞ clamped to `f32::MIN` (the generic path's `shifted`).
    #[inline(always)]
    pub fn shift(x: f32, max: f32) -> f32 {
        let s = x - max;
        if s > f32::MIN { s } else { f32::MIN }
    }

    /// Arguments below this give 0: `e^−87 ≈ 1.6·10⁻³⁸`, just above the smallest normal f32.
    const EXP_FLUSH_BELOW: f32 = -87.0;
    /// The largest f32 whose `e^x` is finite in f32 (just below `ln f32::MAX ≈ 88.7228392`).
    const EXP_LARGEST_FINITE: f32 = 88.722_83;

    /// `e^x` in f32, within one unit in the last place of the exact value where that is at
    /// least `e^−87` (checked against f64 `exp` over all f32 arguments in steps of 61 in the
    /// bit pattern, `tests/suite/fused.rs`), 0 below that (and for −∞), +∞ above `ln f32::MAX`,
    /// NaN for NaN.
    ///
    /// Why not `f32::exp`: the row loops below call `exp` once per entry, a million times per
    /// pass at batch 8, and libm's `expf` is a call per entry that the loop cannot vectorize;
    /// where the result underflows (most of a row at a sampling temperature of 0.1) it also
    /// takes the underflow path, which sets `errno` after a multiplication the CPU finishes in
    /// microcode. This one is straight-line f32 and integer arithmetic (no branch, no call, no
    /// subnormal intermediate), so the loops vectorize. Method: `x = n·ln 2 + r` with `n` the
    /// nearest integer to `x·log₂e` and `|r| ≤ ln 2 / 2` (`n·ln 2` in two parts, the first
    /// exact), `e^r` by the degree-7 polynomial of Cephes' `expf` (S. Moshier), evaluated with
    /// fused multiply-adds, and `e^r·2ⁿ` by adding `n` to the exponent bits of `e^r` (in
    /// `[0.70, 1.42]`, so the sum is the exact product for every `n` the clamp allows, up to
    /// `ln f32::MAX`; above it a select gives +∞).
    ///
    /// The fused multiply-adds (`f32::mul_add`, one rounding each) compile to `vfmadd` in
    /// pulp's AVX2 and AVX-512 entry points: 8 instructions fewer per vector than separate
    /// products and sums, and as accurate (largest error 0.976 ulp either way over every 3rd
    /// bit pattern); the exponent-bits sum gives the value of the two
    /// power-of-two products it replaced for all 2³² arguments (both checked 2026-12-07).
    /// Outside [`vectorized`] (a build for baseline x86-64 has no FMA instructions), in a
    /// build without the `flex` feature, or on a CPU without them, `mul_add` is a call to
    /// libm's `fmaf` (`fma` for [`accumulate`]'s f64 sums): the same value, several times
    /// slower; the row loops run inside [`vectorized`].
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        // 1.5·2²³: adding it rounds `x·log₂e` to an integer held in the low mantissa bits.
        const ROUND: f32 = 12_582_912.0;
        const LN2_HI: f32 = 0.693_359_4; // 355/512, exactly
        const LN2_LO: f32 = -2.121_944_4e-4;
        let c = x.clamp(EXP_FLUSH_BELOW, 89.0);
        let rounded = c.mul_add(std::f32::consts::LOG2_E, ROUND);
        let n = rounded - ROUND;
        let n_int = (rounded.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
        let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, c));
        let q = 1.987_569_1e-4f32
            .mul_add(r, 1.398_199_9e-3)
            .mul_add(r, 8.333_452e-3)
            .mul_add(r, 4.166_579_6e-2)
            .mul_add(r, 1.666_666_5e-1)
            .mul_add(r, 0.5);
        let e_r = q * (r * r) + r + 1.0;
        let y = f32::from_bits(e_r.to_bits().wrapping_add((n_int << 23) as u32));
        // +∞ above ln f32::MAX (where `n` is 128 and the sum would run into the exponent of
        // +∞ and NaN); NaN stays NaN.
        let y = if x <= EXP_LARGEST_FINITE {
            y
        } else {
            x * f32::INFINITY
        };
        if x < EXP_FLUSH_BELOW { 0.0 } else { y }
    }

    /// `(Σ a, Σ a·b)` over [`LANES`] f64 lanes, added into `sums` (entry `i` into lane
    /// `i % LANES`); [`lane_totals`] adds the lanes up. For other crates' row kernels too
    /// (em-infer's host draw).
    #[inline(always)]
    pub fn accumulate(a: &[f32], b: &[f32], sums: &mut [[f64; LANES]; 2]) {
        let (a_lanes, b_lanes) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let rest = a_lanes.remainder().iter().zip(b_lanes.remainder());
        let [sum, weighted] = sums;
        // `a·b` of two f32 is exact in f64, so `mul_add` adds the same value as `+= a·b`, in
        // one instruction.
        for (a, b) in a_lanes.zip(b_lanes) {
            for (((s, w), &a), &b) in sum.iter_mut().zip(weighted.iter_mut()).zip(a).zip(b) {
                *s += f64::from(a);
                *w = f64::from(a).mul_add(f64::from(b), *w);
            }
        }
        for ((&a, &b), (s, w)) in rest.zip(sum.iter_mut().zip(weighted.iter_mut())) {
            *s += f64::from(a);
            *w = f64::from(a).mul_add(f64::from(b), *w);
        }
    }

    /// `(Σ e, Σ e·z')` of one chunk, `z' = shift(z, max)`, `e = exp(z')`.
    #[inline(always)]
    fn exp_sums(z: &[f32], max: f32) -> [f64; 2] {
        let mut sums = [[0f64; LANES]; 2];
        let (mut shifted, mut exps) = ([0f32; BLOCK], [0f32; BLOCK]);
        for block in z.chunks(BLOCK) {
            let n = block.len();
            for ((&x, s), e) in block.iter().zip(&mut shifted).zip(&mut exps) {
                *s = shift(x, max);
                *e = exp(*s);
            }
            accumulate(&exps[..n], &shifted[..n], &mut sums);
        }
        lane_totals(sums)
    }

    /// The two sums' lanes added up.
    #[inline(always)]
    pub fn lane_totals(sums: [[f64; LANES]; 2]) -> [f64; 2] {
        sums.map(|lanes| lanes.iter().sum())
    }

    /// The chunks' `[Σ, Σ]` pairs (collected in chunk order) added in that order, so that a sum
    /// does not depend on how rayon split the work.
    fn add_in_order(parts: Vec<[f64; 2]>) -> [f64; 2] {
        parts
            .into_iter()
            .fold([0.0, 0.0], |[s, w], [a, b]| [s + a, w + b])
    }

    /// Fills one chunk's `log p = z' − ln s` and `p = exp(log p)`; returns its `Σ p·z'`.
    #[inline(always)]
    fn outputs(z: &[f32], max: f32, ln_s: f32, log_probs: &mut [f32], probs: &mut [f32]) -> f64 {
        let mut sums = [[0f64; LANES]; 2];
        let mut shifted = [0f32; BLOCK];
        let blocks = z.chunks(BLOCK).zip(log_probs.chunks_mut(BLOCK));
        for ((block, lp), p) in blocks.zip(probs.chunks_mut(BLOCK)) {
            for (((&x, s), lp), p) in block.iter().zip(&mut shifted).zip(lp).zip(p.iter_mut()) {
                *s = shift(x, max);
                *lp = *s - ln_s;
                *p = exp(*lp);
            }
            accumulate(p, &shifted[..block.len()], &mut sums);
        }
        sums[1].iter().sum()
    }

    /// A row's softmax in three numbers, from which each entry follows on its own:
    /// `log p = shift(z, max) − (log_sum as f32)` and `p = exp(log p)`, the values
    /// [`softmax_entropy`] writes.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Moments {
        /// The row's maximum (finite).
        pub max: f32,
        /// `ln s`, `s = Σ exp(z − max)`.
        pub log_sum: f64,
        /// `Σ exp(z − max)·(z − max) / s`.
        pub mean_shifted: f64,
    }

    impl Moments {
        /// The entropy `ln s − Σ exp(z − max)·(z − max) / s`, in nats.
        pub fn entropy(&self) -> f64 {
            self.log_sum - self.mean_shifted
        }

        /// The entropy `(ln s)₃₂ − Σ p·z'` of the probabilities [`softmax_entropy`] writes,
        /// `p = exp(z' − (ln s)₃₂)` with `ln s` rounded to f32 (as the burn-op path's f32
        /// softmax), from the sums alone: `Σ p·z' = e^(ln s − (ln s)₃₂)·Σ e·z'/s`. Equal to
        /// what [`softmax_entropy`] returns up to the rounding of each `p`.
        ///
        /// Why not [`Moments::entropy`]: those `p` sum to `e^(ln s − (ln s)₃₂)`, not 1, and
        /// the entropy gradient `−p ⊙ (log p + H)` cancels `log p` against `H` (both about
        /// `ln V` for a flat row): it needs the `H` of the same `p` to the last bits.
        pub fn written_entropy(&self) -> f32 {
            let ln_s = f64::from(self.log_sum as f32);
            (ln_s - self.mean_shifted * (self.log_sum - ln_s).exp()) as f32
        }
    }

    /// The [`Moments`] of a row with a finite maximum (two passes: the maximum, then the
    /// sums); `None` otherwise (the row's softmax is NaN throughout).
    pub fn moments(z: &[f32]) -> Option<Moments> {
        moments_from_max(z, max(z))
    }

    /// [`moments`] from the row's maximum, which the caller has already (from a pass of its
    /// own that wrote `z`): one pass. `max` must be [`max`]`(z)`; `None` if it is not finite.
    pub fn moments_from_max(z: &[f32], max: f32) -> Option<Moments> {
        if !max.is_finite() {
            return None;
        }
        let [sum, weighted] = add_in_order(
            z.par_chunks(CHUNK)
                .map(|c| vectorized(ExpSums(c, max)))
                .collect(),
        );
        Some(Moments {
            max,
            log_sum: sum.ln(),
            mean_shifted: weighted / sum,
        })
    }

    /// The entropy of `softmax(z)`: `ln s − Σ e·z' / s` (NaN for a row without a finite
    /// maximum).
    pub fn entropy(z: &[f32]) -> f32 {
        moments(z).map_or(f32::NAN, |m| m.entropy() as f32)
    }

    /// Fills `log_probs` with `z' − ln s` and `probs` with `exp` of it; returns the entropy
    /// `ln s − Σ p·z'`.
    ///
    /// # Panics
    /// If the three slices differ in length.
    pub fn softmax_entropy(z: &[f32], log_probs: &mut [f32], probs: &mut [f32]) -> f32 {
        assert!(
            log_probs.len() == z.len() && probs.len() == z.len(),
            "rows::softmax_entropy: {} logits, {} log-probs, {} probs",
            z.len(),
            log_probs.len(),
            probs.len()
        );
        let Some(Moments { max, log_sum, .. }) = moments(z) else {
            log_probs.fill(f32::NAN);
            probs.fill(f32::NAN);
            return f32::NAN;
        };
        let ln_s = log_sum as f32;
        let weighted: f64 = z
            .par_chunks(CHUNK)
            .zip(log_probs.par_chunks_mut(CHUNK))
            .zip(probs.par_chunks_mut(CHUNK))
            .map(|((z, log_probs), probs)| {
                vectorized(Outputs {
                    z,
                    max,
                    ln_s,
                    log_probs,
                    probs,
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .sum();
        (f64::from(ln_s) - weighted) as f32
    }

    /// `(T, ln T, ln T − Σ w·log p / T)` of one row (see [`crate::kept_entropy`]).
    ///
    /// # Panics
    /// If the slices differ in length.
    pub fn kept_entropy(w: &[f32], log_probs: &[f32]) -> [f32; 3] {
        assert_eq!(
            w.len(),
            log_probs.len(),
            "rows::kept_entropy: weights vs log-probs"
        );
        let [total, weighted] = add_in_order(
            w.par_chunks(CHUNK)
                .zip(log_probs.par_chunks(CHUNK))
                .map(|(w, lp)| vectorized(KeptSums(w, lp)))
                .collect(),
        );
        let log_total = total.ln();
        [
            total as f32,
            log_total as f32,
            (log_total - weighted / total) as f32,
        ]
    }
}

/// The row-major values of a plain f32 tensor on flex (the CPU backend), borrowed from its
/// storage: [`host_rows`]'s result.
pub struct HostRows {
    #[cfg(feature = "flex")]
    tensor: burn_flex::FlexTensor,
    #[cfg(not(feature = "flex"))]
    never: std::convert::Infallible,
}

impl std::fmt::Debug for HostRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostRows")
            .field("rows", &self.rows())
            .field("width", &self.width())
            .finish()
    }
}

impl HostRows {
    /// All rows, row after row (`rows · width` values).
    pub fn values(&self) -> &[f32] {
        #[cfg(feature = "flex")]
        {
            &self.tensor.storage::<f32>()[self.span()]
        }
        #[cfg(not(feature = "flex"))]
        match self.never {}
    }

    /// Where the rows lie in the tensor's storage (contiguous: checked by [`host_rows`]).
    #[cfg(feature = "flex")]
    fn span(&self) -> std::ops::Range<usize> {
        let (start, end) = self
            .tensor
            .layout()
            .contiguous_offsets()
            .unwrap_or_else(|| unreachable!("checked by `host_rows`"));
        start..end
    }

    /// All rows, writable in place, when nothing else references the tensor's storage (the
    /// tensor they came from was dropped, and no clone of it lives); `None` while another
    /// tensor shares it. With [`HostRows::into_tensor`], how a row computation writes its
    /// result over its input instead of into a new buffer.
    pub fn values_mut(&mut self) -> Option<&mut [f32]> {
        #[cfg(feature = "flex")]
        {
            let span = self.span();
            self.tensor
                .try_storage_mut::<f32>()
                .map(|storage| &mut storage[span])
        }
        #[cfg(not(feature = "flex"))]
        match self.never {}
    }

    /// The rows as the flex tensor they were taken from (the same storage and view, no copy).
    pub fn into_tensor(self) -> Tensor<2> {
        #[cfg(feature = "flex")]
        {
            Tensor::from_primitive::<burn_flex::Flex>(self.tensor)
        }
        #[cfg(not(feature = "flex"))]
        match self.never {}
    }

    /// The number of rows (the tensor's first dimension).
    pub fn rows(&self) -> usize {
        self.dims()[0]
    }

    /// The length of a row (the tensor's last dimension).
    pub fn width(&self) -> usize {
        self.dims()[1]
    }

    fn dims(&self) -> [usize; 2] {
        #[cfg(feature = "flex")]
        {
            self.tensor.layout().shape().dims::<2>()
        }
        #[cfg(not(feature = "flex"))]
        match self.never {}
    }
}

/// The values of `t` as host rows, without a copy, when `t` is a plain f32 tensor on flex
/// (not autodiff-tracked, stored row-major and contiguous); `None` for every other tensor
/// (other backends, f64 and 16-bit dtypes, strided views), where the caller runs burn ops.
/// With [`rows`] and [`tensor_from_rows`] this is how a row-wise computation skips burn's
/// one-pass-per-op evaluation on the CPU.
pub fn host_rows(t: &Tensor<2>) -> Option<HostRows> {
    #[cfg(feature = "flex")]
    {
        if t.is_autodiff() || t.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let tensor = t.clone().try_into_primitive::<burn_flex::Flex>().ok()?;
        tensor.layout().contiguous_offsets()?;
        Some(HostRows { tensor })
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = t;
        None
    }
}

/// An f32 tensor of `shape` on `device` holding `values` (row-major): the way back from
/// [`host_rows`].
///
/// # Panics
/// If `values` does not have `shape[0] · shape[1]` entries.
pub fn tensor_from_rows(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    assert_eq!(
        values.len(),
        shape[0] * shape[1],
        "tensor_from_rows: {} values for shape {shape:?}",
        values.len()
    );
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F32))
}

/// [`rows::softmax_entropy`] over every row of `rows` (on rayon's threads).
fn softmax_entropy_rows(rows: &HostRows, device: &Device) -> SoftmaxEntropy {
    let (n, width) = (rows.rows(), rows.width());
    let z = rows.values();
    let mut log_probs = vec![0f32; z.len()];
    let mut probs = vec![0f32; z.len()];
    let mut entropy = vec![0f32; n];
    z.par_chunks(width)
        .zip(log_probs.par_chunks_mut(width))
        .zip(probs.par_chunks_mut(width))
        .zip(entropy.par_iter_mut())
        .for_each(|(((z, lp), p), h)| *h = rows::softmax_entropy(z, lp, p));
    SoftmaxEntropy {
        log_probs: tensor_from_rows(log_probs, [n, width], device),
        probs: tensor_from_rows(probs, [n, width], device),
        entropy: tensor_from_rows(entropy, [n, 1], device),
    }
}

/// How long a [`with_pool_awake`] poller goes on without a job to run: far above the gaps
/// between a decode step's parallel regions (tens of µs), far below a step.
const POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Runs `f` on a rayon worker (in place when called from one) while every other worker of the
/// pool polls for jobs instead of sleeping, until `f` returns: for a CPU computation made of
/// many short parallel regions. em-models runs a flex forward pass in it, em-infer EM-INF's
/// host path (eight regions per call at 3 steps).
///
/// A decode step forks a few hundred short parallel regions; between two of them a worker
/// with nothing to steal goes to sleep within microseconds and the next region pays a futex
/// wake-up for it (~35 k context switches over a 128-token decode of the 0.5B model). Here a
/// poller job per other worker loops on [`rayon::yield_now`], which runs any job it can
/// steal, so the step's jobs start at once. The pollers spin only while `f` runs and end on
/// unwind too. A poller that lands on `f`'s own thread (it waits for its scope there) or on a
/// thread already polling (a nested call) returns at once.
///
/// A poller also ends after 1 ms (`POLL_IDLE`) without a job to run. A worker can pick one up
/// while it waits inside one of `f`'s own jobs (with three or more threads a thief may steal
/// one of `f`'s jobs before it reaches a poller); that job cannot resume under a poller that
/// waits for `f`, so without the limit the step would deadlock; with it the job resumes after
/// the limit.
pub fn with_pool_awake<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicBool, Ordering};

    thread_local!(static POLLING: Cell<bool> = const { Cell::new(false) });

    /// Sets the flag when dropped: on return and on unwind alike.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }

    let done = AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        let done = &done;
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                if rayon::current_thread_index() == owner || POLLING.get() {
                    return;
                }
                POLLING.set(true);
                let mut idle_since = None;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle_since = None;
                        continue;
                    }
                    let now = std::time::Instant::now();
                    if now - *idle_since.get_or_insert(now) > POLL_IDLE {
                        break;
                    }
                    std::hint::spin_loop();
                }
                POLLING.set(false);
            });
        }
        let _done = Done(done);
        f()
    })
}

#[cfg(all(test, feature = "flex"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use burn::tensor::{DType, Device, Tensor, TensorData};

    fn logits() -> Tensor<2> {
        let values: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin() * 3.0).collect();
        Tensor::from_data(TensorData::new(values, [3, 4]), &Device::flex())
    }

    /// The fused path is what plain f32 flex tensors get (else the twin tests in
    /// `tests/suite/fused.rs` would compare the generic path with itself), and only those.
    #[test]
    fn taken_for_plain_f32_flex_tensors_only() {
        let z = logits();
        assert!(super::softmax_entropy(&z).is_some());
        assert!(super::entropy(&z).is_some());
        let parts = super::softmax_entropy(&z).unwrap();
        assert!(super::kept_entropy(&parts.probs, &parts.log_probs).is_some());
        assert!(super::softmax_entropy(&z.clone().autodiff()).is_none());
        assert!(super::entropy(&z.clone().cast(DType::F64)).is_none());
        // A transposed view has no row-major storage.
        assert!(super::entropy(&z.clone().transpose()).is_none());
    }

    /// The host rows are the tensor's values in row-major order, and come back unchanged.
    #[test]
    fn host_rows_round_trip() {
        let z = logits();
        let want: Vec<f32> = z.clone().into_data().try_to_vec().unwrap();
        let rows = super::host_rows(&z).unwrap();
        assert_eq!((rows.rows(), rows.width()), (3, 4));
        assert_eq!(rows.values(), want.as_slice());
        // A slice of whole rows is contiguous: its rows are taken from the middle of the storage.
        let tail = super::host_rows(&z.clone().slice([1..3, 0..4])).unwrap();
        assert_eq!(tail.values(), &want[4..]);
        let back = super::tensor_from_rows(rows.values().to_vec(), [3, 4], &z.device());
        assert_eq!(back.into_data().try_to_vec::<f32>().unwrap(), want);
    }

    #[test]
    #[should_panic(expected = "tensor_from_rows: 5 values for shape [2, 3]")]
    fn tensor_from_rows_checks_the_length() {
        super::tensor_from_rows(vec![0.0; 5], [2, 3], &Device::flex());
    }

    /// `with_pool_awake` returns `f`'s value and lets its panic through with the pollers
    /// stopped (the scope would hang on a poller that never ends); nested and concurrent calls
    /// on a pool of four threads, with `f`'s jobs forking further, finish with the serial sums
    /// (a poller that blocked one of `f`'s own jobs without its idle limit would hang here).
    #[test]
    fn pool_awake_returns_unwinds_and_nests() {
        use super::with_pool_awake;
        use rayon::prelude::*;
        assert_eq!(with_pool_awake(|| 7), 7);
        let caught = std::panic::catch_unwind(|| with_pool_awake(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(with_pool_awake(|| 8), 8);

        fn work(depth: u32, seed: u64) -> u64 {
            if depth == 0 {
                return (0..2000u64).map(|i| (i ^ seed).wrapping_mul(31) % 97).sum();
            }
            let (a, b) = rayon::join(|| work(depth - 1, seed * 3), || work(depth - 1, seed * 5));
            let c: u64 = (0..8u64)
                .into_par_iter()
                .map(|i| {
                    if i == 3 && depth == 2 {
                        with_pool_awake(|| work(1, seed + i))
                    } else {
                        work(0, seed + i)
                    }
                })
                .sum();
            a.wrapping_add(b).wrapping_add(c)
        }
        fn serial(depth: u32, seed: u64) -> u64 {
            if depth == 0 {
                return (0..2000u64).map(|i| (i ^ seed).wrapping_mul(31) % 97).sum();
            }
            let a = serial(depth - 1, seed * 3);
            let b = serial(depth - 1, seed * 5);
            let c: u64 = (0..8u64)
                .map(|i| {
                    if i == 3 && depth == 2 {
                        serial(1, seed + i)
                    } else {
                        serial(0, seed + i)
                    }
                })
                .sum();
            a.wrapping_add(b).wrapping_add(c)
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .expect("a test pool");
        std::thread::scope(|threads| {
            for caller in 0..3u64 {
                let pool = &pool;
                threads.spawn(move || {
                    for round in 0..20u64 {
                        let seed = caller * 1000 + round;
                        let got = pool.install(|| with_pool_awake(|| work(4, seed)));
                        assert_eq!(got, serial(4, seed), "caller {caller} round {round}");
                    }
                });
            }
        });
    }
}
