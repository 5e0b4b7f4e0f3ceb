//! Text preprocessing driven by the manifest: the inputs whose schema carries a tokenization hint
//! are all produced from one batch encoding (input_ids, attention_mask, token_type_ids, ...).
//!
//! The package's settings win over whatever the tokenizer file carries: padding is always to the
//! longest text of the batch (some tokenizer.json files pad to a fixed length) and truncation is
//! at the schema's `max_length` (some files truncate shorter than the model was trained for).

use crate::Package;
use crate::schema::{IoSchema, PaddingSide, TokenField, Tokenization};
use crate::source::FileRef;
use crate::tensor::{DType, HostTensor, NamedTensors, TensorData};
use crate::{Error, Result};
use std::path::{Path, PathBuf};
use tokenizers::{Encoding, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

/// Runs a call into the `tokenizers` crate for the tokenizer at `path`: its errors, and the
/// panics it raises on some damaged files, become [`Error::Tokenizer`].
pub(crate) fn tokenizer_call<T>(
    path: &Path,
    f: impl FnOnce() -> tokenizers::Result<T>,
) -> Result<T> {
    let error = |message: String| Error::Tokenizer {
        path: path.to_path_buf(),
        message,
    };
    crate::guard::guarded(
        || f().map_err(|e| error(e.to_string())),
        |panic| error(format!("the tokenizer failed on this input ({panic})")),
    )
}

/// Loads a tokenizer.json.
pub(crate) fn load_tokenizer(file: impl Into<FileRef>) -> Result<Tokenizer> {
    let file = file.into();
    let bytes = file.read()?;
    tokenizer_call(file.path(), || Tokenizer::from_bytes(&bytes))
}

/// A batch of texts turned into model inputs.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// One tensor per tokenized input of the schema, `[batch, sequence]`.
    pub inputs: NamedTensors,
    /// Number of real tokens per text (special tokens included, padding excluded).
    pub lengths: Vec<usize>,
    /// Indices of the texts that were truncated.
    pub truncated: Vec<usize>,
    /// Whether padding is on the left (the real tokens are the last `lengths[b]`).
    pub left_padded: bool,
}

/// Tokenizer plus the list of inputs to fill, built from the schema's hints. Every method takes
/// `&self`, so one preprocessor serves many threads.
#[derive(Clone)]
pub struct TextPreprocessor {
    /// Never truncates (the tokenizer file's own truncation is removed).
    tokenizer: Tokenizer,
    /// A copy that truncates at `max_length`, made on first use.
    truncating: std::sync::OnceLock<Tokenizer>,
    path: PathBuf,
    max_length: usize,
    left_padded: bool,
    /// The pad token (and its type id) for batches of texts of different lengths, added by
    /// [`TextPreprocessor::pack`] on the schema's padding side; `None` when neither the
    /// tokenizer nor the package names one.
    padding: Option<Padding>,
    fields: Vec<(String, TokenField, DType)>,
}

/// The token that fills a batch's shorter texts.
#[derive(Clone, Copy, Debug)]
struct Padding {
    id: u32,
    type_id: u32,
}

/// Texts tokenized but not yet padded into a batch ([`TextPreprocessor::tokenize_batch`]).
pub(crate) struct Tokenized {
    encodings: Vec<Encoding>,
    truncated: Vec<bool>,
}

impl Tokenized {
    /// Number of real tokens of text `i` (special tokens included).
    pub(crate) fn len_of(&self, i: usize) -> usize {
        self.encodings[i].len()
    }
}

impl std::fmt::Debug for TextPreprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextPreprocessor")
            .field("path", &self.path)
            .field("max_length", &self.max_length)
            .field("fields", &self.fields)
            .finish()
    }
}

impl TextPreprocessor {
    /// Builds the preprocessor for the inputs of `io` that have tokenization hints, reading the
    /// tokenizer they name from `package` (a directory or a bundle).
    pub fn from_package(package: &Package, io: &IoSchema) -> Result<Self> {
        Self::from_schema_with(io, |rel| package.file(rel))
    }

    /// [`from_package`](TextPreprocessor::from_package) for a directory holding the tokenizer
    /// files the schema names (relative paths only).
    pub fn from_schema(root: &Path, io: &IoSchema) -> Result<Self> {
        Self::from_schema_with(io, |rel| {
            let rel = crate::package::check_relative("tokenizer", rel)?;
            Ok(FileRef::file(root.join(rel)))
        })
    }

    fn from_schema_with(io: &IoSchema, open: impl Fn(&str) -> Result<FileRef>) -> Result<Self> {
        let hinted: Vec<(&str, &Tokenization, DType)> = io
            .inputs
            .iter()
            .filter_map(|s| s.tokenization().map(|t| (s.name.as_str(), t, s.dtype)))
            .collect();
        let Some(&(_, first, _)) = hinted.first() else {
            return Err(Error::Unsupported(
                "this package takes no text: none of its inputs has a tokenization hint \
                 (give raw tensors with --input NAME=FILE.npy)"
                    .into(),
            ));
        };
        if let Some((name, _, _)) = hinted.iter().find(|(_, t, _)| {
            t.tokenizer != first.tokenizer
                || t.max_length != first.max_length
                || t.padding_side != first.padding_side
        }) {
            return Err(Error::Unsupported(format!(
                "input `{name}` uses different tokenization settings from the others"
            )));
        }
        for (name, _, dtype) in &hinted {
            if !matches!(dtype, DType::Int64 | DType::Int32) {
                return Err(Error::Unsupported(format!(
                    "input `{name}` is tokenized but has dtype {dtype} (int64 or int32 expected)"
                )));
            }
        }
        let file = open(&first.tokenizer)?;
        let tokenizer = load_tokenizer(&file)?;
        let path = file.path().to_path_buf();
        let mut pre = TextPreprocessor {
            tokenizer,
            truncating: std::sync::OnceLock::new(),
            path,
            max_length: first.max_length,
            left_padded: first.padding_side == PaddingSide::Left,
            padding: None,
            fields: hinted
                .iter()
                .map(|(n, t, d)| (n.to_string(), t.field, *d))
                .collect(),
        };
        pre.configure_padding(first);
        if let Err(e) = pre.tokenizer.with_truncation(None) {
            return Err(pre.tokenizer_error(e));
        }
        Ok(pre)
    }

    /// Pads batches to their longest text with the tokenizer's pad token, else the package's
    /// (when its vocabulary has it). Without either, a batch that needs padding is refused in
    /// `pack`. The tokenizer itself never pads: batches are padded when they are packed, so
    /// texts can be tokenized once and grouped by length afterwards.
    fn configure_padding(&mut self, hint: &Tokenization) {
        self.padding = match self.tokenizer.get_padding() {
            Some(p) => Some(Padding {
                id: p.pad_id,
                type_id: p.pad_type_id,
            }),
            None => hint
                .pad_id
                .filter(|&id| self.tokenizer.id_to_token(id).is_some())
                .map(|id| Padding { id, type_id: 0 }),
        };
        self.tokenizer.with_padding(None);
    }

    fn tokenizer_error(&self, e: tokenizers::Error) -> Error {
        Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The tokenizer that truncates at the model's maximum (`truncate`) or the one that does
    /// not: without truncation we still encode everything and refuse over-long texts afterwards.
    fn tokenizer(&self, truncate: bool) -> Result<&Tokenizer> {
        if !truncate {
            return Ok(&self.tokenizer);
        }
        if let Some(t) = self.truncating.get() {
            return Ok(t);
        }
        let mut t = self.tokenizer.clone();
        t.with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length: self.max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| self.tokenizer_error(e))?;
        Ok(self.truncating.get_or_init(|| t))
    }

    /// The longest sequence the model takes.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Token ids of one text, with or without the tokenizer's special tokens (a chat template
    /// already contains them), never padded or truncated.
    pub fn encode_ids(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let tokenizer = &self.tokenizer;
        let encoding = tokenizer_call(&self.path, || {
            tokenizer.encode_fast(text, add_special_tokens)
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of a token (for special tokens such as BOS/EOS in chat templates).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        tokenizer_call(&self.path, || self.tokenizer.decode(ids, true))
    }

    /// Encodes a batch of texts into the schema's inputs, padded to the longest.
    pub fn encode(&self, texts: &[&str], truncate: bool) -> Result<Encoded> {
        let tokenized = self.tokenize_batch(texts, truncate)?;
        let all: Vec<usize> = (0..texts.len()).collect();
        self.pack(&tokenized, &all)
    }

    /// Tokenizes `texts` without padding. Without `truncate`, a text longer than the model's
    /// maximum is [`Error::TextTooLong`] naming its index in `texts`.
    pub(crate) fn tokenize_batch(&self, texts: &[&str], truncate: bool) -> Result<Tokenized> {
        if texts.is_empty() {
            return Err(Error::InvalidArgument("no texts given".into()));
        }
        let tokenizer = self.tokenizer(truncate)?;
        let encodings = tokenizer_call(&self.path, || {
            tokenizer.encode_batch_fast(texts.to_vec(), true)
        })?;
        let mut truncated = Vec::with_capacity(encodings.len());
        for (index, enc) in encodings.iter().enumerate() {
            if !truncate && enc.len() > self.max_length {
                return Err(Error::TextTooLong {
                    index,
                    length: enc.len(),
                    max: self.max_length,
                });
            }
            truncated.push(!enc.get_overflowing().is_empty());
        }
        Ok(Tokenized {
            encodings,
            truncated,
        })
    }

    /// The texts `rows` of `tokenized` as one batch of the schema's inputs, padded to the
    /// longest of them; `lengths` and `truncated` of the result are in `rows`' order.
    pub(crate) fn pack(&self, tokenized: &Tokenized, rows: &[usize]) -> Result<Encoded> {
        let encodings: Vec<&Encoding> = rows.iter().map(|&i| &tokenized.encodings[i]).collect();
        let batch = encodings.len();
        let lengths: Vec<usize> = encodings.iter().map(|e| e.len()).collect();
        let seq = lengths.iter().copied().max().unwrap_or(0);
        if self.padding.is_none() && lengths.iter().any(|&l| l != seq) {
            return Err(Error::Tokenizer {
                path: self.path.clone(),
                message: "texts of different lengths need padding, but the tokenizer defines no \
                          pad token and the package's pad_id is not in its vocabulary"
                    .into(),
            });
        }
        let pad = self.padding.unwrap_or(Padding { id: 0, type_id: 0 });
        let truncated = (0..batch)
            .filter(|&j| tokenized.truncated[rows[j]])
            .collect();
        let mut inputs = NamedTensors::new();
        for (name, field, dtype) in &self.fields {
            let (pad, real): (u32, fn(&Encoding) -> &[u32]) = match field {
                TokenField::Ids => (pad.id, Encoding::get_ids),
                TokenField::AttentionMask => (0, Encoding::get_attention_mask),
                TokenField::TypeIds => (pad.type_id, Encoding::get_type_ids),
            };
            // Each row: its tokens and `seq - len` pad values on the package's padding side.
            let mut values = Vec::with_capacity(batch * seq);
            for e in &encodings {
                let padding = std::iter::repeat_n(pad, seq - e.len());
                if self.left_padded {
                    values.extend(padding.chain(real(e).iter().copied()));
                } else {
                    values.extend(real(e).iter().copied().chain(padding));
                }
            }
            let data = match dtype {
                DType::Int32 => TensorData::Int32(values.into_iter().map(|v| v as i32).collect()),
                _ => TensorData::Int64(values.into_iter().map(i64::from).collect()),
            };
            inputs.insert(name.clone(), HostTensor::new(vec![batch, seq], data)?);
        }
        Ok(Encoded {
            inputs,
            lengths,
            truncated,
            left_padded: self.left_padded,
        })
    }
}
