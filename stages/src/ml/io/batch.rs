//! A rectangular batch of token ids with its attention mask.
//!
//! Rows of different lengths are padded on the left (for generation: every row's last prompt
//! token sits in the last column, so the next token of every row is sampled from the same
//! column) or on the right (for scoring and training: real tokens start at column 0). The mask
//! is 1 for a real token and 0 for padding; GPT-2 positions count real tokens only, so a row
//! gets the same positions (and the same outputs) whatever padding surrounds it.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::ml::error::{MlError, Result};

/// Which side of a row the padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad before the tokens (generation).
    Left,
    /// Pad after the tokens (scoring, training).
    Right,
}

/// `rows × len` token ids and mask, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Number of rows (sequences).
    pub rows: usize,
    /// Number of columns (tokens per padded row).
    pub len: usize,
    /// Token ids, `rows * len`, padding filled with the pad id.
    pub ids: Vec<u32>,
    /// 1 for a real token, 0 for padding, `rows * len`.
    pub mask: Vec<u8>,
}

impl TokenBatch {
    /// Pad `rows` to their longest length with `pad_id` on the given side.
    pub fn from_rows(rows: &[Vec<u32>], pad_id: u32, padding: Padding) -> Result<Self> {
        if rows.is_empty() {
            return Err(MlError::Invalid(
                "a token batch needs at least one row".into(),
            ));
        }
        let len = rows.iter().map(Vec::len).max().unwrap_or(0);
        if len == 0 {
            return Err(MlError::Invalid(
                "every row of the token batch is empty".into(),
            ));
        }
        let mut ids = Vec::with_capacity(rows.len() * len);
        let mut mask = Vec::with_capacity(rows.len() * len);
        for row in rows {
            let pad = len - row.len();
            if padding == Padding::Left {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u8, pad));
            }
            ids.extend_from_slice(row);
            mask.extend(std::iter::repeat_n(1u8, row.len()));
            if padding == Padding::Right {
                ids.extend(std::iter::repeat_n(pad_id, pad));
                mask.extend(std::iter::repeat_n(0u8, pad));
            }
        }
        Ok(TokenBatch {
            rows: rows.len(),
            len,
            ids,
            mask,
        })
    }

    /// A batch without padding (every row has the same length).
    pub fn unpadded(rows: &[Vec<u32>]) -> Result<Self> {
        if rows.iter().any(|r| r.len() != rows[0].len()) {
            return Err(MlError::Invalid(
                "unpadded batch rows must have equal lengths".into(),
            ));
        }
        Self::from_rows(rows, 0, Padding::Right)
    }

    /// The real tokens of row `r`.
    pub fn row_tokens(&self, r: usize) -> Vec<u32> {
        let s = r * self.len;
        (s..s + self.len)
            .filter(|&i| self.mask[i] == 1)
            .map(|i| self.ids[i])
            .collect()
    }

    /// Column of the last real token of each row (`len - 1` for left padding).
    pub fn last_real_index(&self) -> Vec<usize> {
        (0..self.rows)
            .map(|r| {
                let row = &self.mask[r * self.len..(r + 1) * self.len];
                row.iter().rposition(|&m| m == 1).unwrap_or(0)
            })
            .collect()
    }

    /// The ids as an `[rows, len]` Int tensor.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let data: Vec<i64> = self.ids.iter().map(|&i| i as i64).collect();
        Tensor::from_data(TensorData::new(data, [self.rows, self.len]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_and_right_padding_place_tokens_and_mask() {
        let rows = vec![vec![5, 6, 7], vec![9]];
        let left = TokenBatch::from_rows(&rows, 0, Padding::Left).unwrap();
        assert_eq!(left.ids, vec![5, 6, 7, 0, 0, 9]);
        assert_eq!(left.mask, vec![1, 1, 1, 0, 0, 1]);
        assert_eq!(left.last_real_index(), vec![2, 2]);
        let right = TokenBatch::from_rows(&rows, 0, Padding::Right).unwrap();
        assert_eq!(right.ids, vec![5, 6, 7, 9, 0, 0]);
        assert_eq!(right.mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(right.last_real_index(), vec![2, 0]);
        assert_eq!(right.row_tokens(1), vec![9]);
        assert_eq!(left.row_tokens(1), vec![9]);
    }

    #[test]
    fn empty_batches_are_rejected() {
        assert!(TokenBatch::from_rows(&[], 0, Padding::Left).is_err());
        assert!(TokenBatch::from_rows(&[vec![]], 0, Padding::Left).is_err());
        assert!(TokenBatch::unpadded(&[vec![1, 2], vec![3]]).is_err());
    }
}
