//! The tokenizer side of generation: [`Detokenize`] turns ids into text, and [`IncrementalText`]
//! turns a growing id sequence into the pieces of text each new token adds.

use crate::Result;
use crate::preprocess::TextPreprocessor;

/// Decodes token ids to text; the tokenizer side of generation (implemented by
/// [`TextPreprocessor`](crate::preprocess::TextPreprocessor), and by fakes in tests).
pub trait Detokenize {
    /// Text of `ids`, special tokens skipped.
    fn decode(&self, ids: &[u32]) -> Result<String>;
}

impl Detokenize for TextPreprocessor {
    fn decode(&self, ids: &[u32]) -> Result<String> {
        TextPreprocessor::decode(self, ids)
    }
}

/// Emits text as tokens arrive, never splitting a UTF-8 character or a merge that later tokens
/// complete (the prefix/read offsets scheme of text-generation-inference).
#[derive(Debug, Default)]
pub(super) struct IncrementalText {
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalText {
    pub(super) fn new(prompt_len: usize) -> Self {
        // Start a few tokens back so that the first piece has its leading space.
        IncrementalText {
            prefix_offset: prompt_len.saturating_sub(5),
            read_offset: prompt_len,
        }
    }

    /// The text that `ids` (the prompt and every token so far) adds to what was emitted; empty
    /// while the last tokens do not yet make whole characters.
    pub(super) fn next(&mut self, tok: &dyn Detokenize, ids: &[u32]) -> Result<String> {
        let prefix = tok.decode(&ids[self.prefix_offset..self.read_offset])?;
        let full = tok.decode(&ids[self.prefix_offset..])?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let piece = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = ids.len();
            Ok(piece)
        } else {
            Ok(String::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Bytes;
    impl Detokenize for Bytes {
        fn decode(&self, ids: &[u32]) -> Result<String> {
            let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
    }

    #[test]
    fn incremental_text_never_splits_a_character() {
        let ids: Vec<u32> = "a€b".bytes().map(u32::from).collect();
        let mut inc = IncrementalText::new(0);
        let mut out = Vec::new();
        for n in 1..=ids.len() {
            out.push(inc.next(&Bytes, &ids[..n]).unwrap());
        }
        assert_eq!(out, ["a", "", "", "€", "b"]);
    }
}
