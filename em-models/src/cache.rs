//! A pre-allocated key/value cache: per layer one `[batch, kv_heads, max_len, head_dim]` buffer
//! for keys and one for values, written in place as tokens arrive.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{ModelError, Result};

#[derive(Debug, Default)]
struct LayerCache {
    keys: Option<Tensor<4>>,
    values: Option<Tensor<4>>,
}

/// The KV cache of one batch of sequences. Create it with
/// [`CausalLm::new_cache`](crate::CausalLm::new_cache); the model allocates the buffers on the
/// first forward pass (on its own device and dtype) and reuses them until the cache is dropped.
///
/// Rows of a batch are **left-padded** to a common length; [`KvCache::set_left_padding`] tells the
/// model how many leading positions of each row are padding, so that they are masked out of
/// attention and positions count from each row's first real token.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    batch: usize,
    max_len: usize,
    len: usize,
    left_padding: Vec<usize>,
}

impl KvCache {
    /// An empty cache for `num_layers` layers, `batch` rows and at most `max_len` positions.
    ///
    /// # Panics
    /// If `batch` or `max_len` is zero.
    pub fn new(num_layers: usize, batch: usize, max_len: usize) -> Self {
        assert!(
            batch > 0 && max_len > 0,
            "KvCache: batch ({batch}) and max_len ({max_len}) must be positive"
        );
        Self {
            layers: (0..num_layers).map(|_| LayerCache::default()).collect(),
            batch,
            max_len,
            len: 0,
            left_padding: vec![0; batch],
        }
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Positions the cache can hold.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Positions filled so far (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Leading padding positions of each row.
    pub fn left_padding(&self) -> &[usize] {
        &self.left_padding
    }

    /// Declares how many leading positions of each row are padding. Only allowed on an empty
    /// cache (before the prompt is fed).
    ///
    /// # Errors
    /// [`ModelError::Batch`] if the cache is not empty, the list does not have one entry per row,
    /// or a row would be all padding beyond `max_len`.
    pub fn set_left_padding(&mut self, padding: &[usize]) -> Result<()> {
        if !self.is_empty() {
            return Err(ModelError::Batch(
                "left padding can only be set on an empty cache".into(),
            ));
        }
        if padding.len() != self.batch {
            return Err(ModelError::Batch(format!(
                "{} padding lengths for a batch of {}",
                padding.len(),
                self.batch
            )));
        }
        if let Some(p) = padding.iter().find(|p| **p >= self.max_len) {
            return Err(ModelError::Batch(format!(
                "left padding {p} leaves no room in a cache of {}",
                self.max_len
            )));
        }
        self.left_padding = padding.to_vec();
        Ok(())
    }

    /// Forgets everything (the buffers are kept for reuse) and clears the padding.
    pub fn reset(&mut self) {
        self.len = 0;
        self.left_padding.fill(0);
    }

    /// Drops the positions from `len` on, e.g. to re-decode from a shared prefix.
    ///
    /// # Errors
    /// [`ModelError::Batch`] if `len` exceeds the positions filled.
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(ModelError::Batch(format!(
                "cannot truncate a cache of {} positions to {len}",
                self.len
            )));
        }
        self.len = len;
        Ok(())
    }

    /// Keeps only the batch rows listed in `rows` (in that order), dropping the others' keys,
    /// values and padding, so that later forward passes run on the smaller batch. A generator
    /// calls this when some sequences have finished.
    ///
    /// # Errors
    /// [`ModelError::Batch`] if `rows` is empty, names a row twice or a row outside the batch.
    pub fn retain_rows(&mut self, rows: &[usize]) -> Result<()> {
        let mut seen = vec![false; self.batch];
        for &row in rows {
            if row >= self.batch || std::mem::replace(&mut seen[row], true) {
                return Err(ModelError::Batch(format!(
                    "cannot retain rows {rows:?} of a batch of {}",
                    self.batch
                )));
            }
        }
        if rows.is_empty() {
            return Err(ModelError::Batch(
                "retaining no rows would leave an empty batch".into(),
            ));
        }
        if rows.len() == self.batch && rows.iter().enumerate().all(|(i, r)| i == *r) {
            return Ok(());
        }
        let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        // One upload of the row list, shared by every layer's buffers.
        let mut index_tensor: Option<Tensor<1, Int>> = None;
        for layer in &mut self.layers {
            for buffer in [&mut layer.keys, &mut layer.values] {
                if let Some(b) = buffer.take() {
                    let index = index_tensor
                        .get_or_insert_with(|| {
                            Tensor::from_data(
                                TensorData::new(index.clone(), [index.len()]),
                                &b.device(),
                            )
                        })
                        .clone();
                    *buffer = Some(b.select(0, index));
                }
            }
        }
        self.left_padding = rows.iter().map(|&r| self.left_padding[r]).collect();
        self.batch = rows.len();
        Ok(())
    }

    /// Checks that `new` positions fit.
    pub(crate) fn check_room(&self, batch: usize, new: usize) -> Result<()> {
        if batch != self.batch {
            return Err(ModelError::Batch(format!(
                "input has {batch} rows, the cache {}",
                self.batch
            )));
        }
        if self.len + new > self.max_len {
            return Err(ModelError::ContextOverflow {
                needed: self.len + new,
                capacity: self.max_len,
            });
        }
        Ok(())
    }

    /// Writes the new keys/values `[batch, kv_heads, new, head_dim]` of `layer` after the cached
    /// ones and returns all of them, `[batch, kv_heads, len + new, head_dim]`.
    pub(crate) fn append(
        &mut self,
        layer: usize,
        keys: Tensor<4>,
        values: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [batch, heads, new, head_dim] = keys.dims();
        let (start, end, max_len) = (self.len, self.len + new, self.max_len);
        let slot = &mut self.layers[layer];
        let write = |buffer: Option<Tensor<4>>, fresh: Tensor<4>| {
            let buffer = match buffer {
                Some(b)
                    if b.dims() == [batch, heads, max_len, head_dim]
                        && b.dtype() == fresh.dtype() =>
                {
                    b
                }
                _ => Tensor::zeros(
                    [batch, heads, max_len, head_dim],
                    (&fresh.device(), fresh.dtype()),
                ),
            };
            let buffer = buffer.slice_assign([0..batch, 0..heads, start..end, 0..head_dim], fresh);
            let visible = buffer
                .clone()
                .slice([0..batch, 0..heads, 0..end, 0..head_dim]);
            (buffer, visible)
        };
        let (kb, k) = write(slot.keys.take(), keys);
        let (vb, v) = write(slot.values.take(), values);
        slot.keys = Some(kb);
        slot.values = Some(vb);
        (k, v)
    }

    /// Layer `layer`'s whole key and value buffers, `[batch, kv_heads, max_len, head_dim]`
    /// (positions from [`KvCache::len`] on hold nothing yet), once a forward pass has allocated
    /// them: decode attention reads them in place ([`crate::attend`]).
    pub(crate) fn buffers(&self, layer: usize) -> Option<(Tensor<4>, Tensor<4>)> {
        let slot = self.layers.get(layer)?;
        Some((slot.keys.clone()?, slot.values.clone()?))
    }

    /// Marks `new` positions as filled (after every layer has appended them).
    pub(crate) fn advance(&mut self, new: usize) {
        self.len += new;
    }
}
