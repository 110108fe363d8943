//! Hugging Face `tokenizer.json` support: a thin wrapper over the `tokenizers` crate.
//!
//! [`Tokenizer`] loads a `tokenizer.json` (the "fast tokenizer" format written by the
//! Python `tokenizers` library and by `transformers`' `save_pretrained`), encodes text to
//! token ids and decodes ids back to text. Encoding never adds special tokens (no BOS/EOS
//! post-processing), which matches `tokenizer(text, add_special_tokens=False)` in
//! `transformers`; special tokens that appear literally in the text (e.g.
//! `<|endoftext|>`) are still recognised as single tokens, exactly as in Python.
//!
//! Parity with `transformers` is checked by `tests/tokenizer_parity.rs` against fixtures
//! produced by `scripts/fixtures/make_tokenizer_fixtures.py`.

use std::fs;
use std::path::{Path, PathBuf};

/// Errors from loading, using or saving a [`Tokenizer`].
///
/// Every variant tied to a file names that file in its message.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The tokenizer file could not be read from disk (missing, unreadable, ...).
    #[error("cannot read tokenizer file {}: {source}", path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer file was read but is not a valid `tokenizer.json`.
    #[error("invalid tokenizer file {}: {source}", path.display())]
    Parse {
        /// The file that was being parsed.
        path: PathBuf,
        /// The error reported by the `tokenizers` crate.
        #[source]
        source: tokenizers::Error,
    },
    /// Encoding a text failed.
    #[error("tokenizer encode failed: {0}")]
    Encode(#[source] tokenizers::Error),
    /// Decoding a sequence of ids failed (e.g. an id outside the vocabulary).
    #[error("tokenizer decode failed: {0}")]
    Decode(#[source] tokenizers::Error),
    /// Serializing the tokenizer to JSON failed.
    #[error("cannot serialize tokenizer for {}: {source}", path.display())]
    Serialize {
        /// The destination file.
        path: PathBuf,
        /// The error reported by the `tokenizers` crate.
        #[source]
        source: tokenizers::Error,
    },
    /// Writing the tokenizer file failed.
    #[error("cannot write tokenizer file {}: {source}", path.display())]
    Write {
        /// The destination file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A Hugging Face fast tokenizer loaded from a `tokenizer.json` file.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Loads a tokenizer from a `tokenizer.json` file.
    ///
    /// Fails with [`TokenizerError::Read`] if the file cannot be read and with
    /// [`TokenizerError::Parse`] if its contents are not a valid tokenizer; both name `path`.
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let bytes = fs::read(path).map_err(|source| TokenizerError::Read { path: path.to_path_buf(), source })?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|source| TokenizerError::Parse { path: path.to_path_buf(), source })?;
        Ok(Self { inner })
    }

    /// Encodes `text` into token ids, without adding any special tokens.
    ///
    /// Equivalent to `transformers`' `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode_fast(text, false).map_err(TokenizerError::Encode)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes token ids back into text. Special tokens are kept in the output
    /// (`skip_special_tokens=False`, the `transformers` default).
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner.decode(ids, false).map_err(TokenizerError::Decode)
    }

    /// Number of distinct tokens, including added (special) tokens; this is `len(tokenizer)`
    /// in `transformers`. It can be smaller than a model's `vocab_size`, which is often
    /// padded.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The id of token string `s` (a vocabulary entry or an added token), if any.
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    /// Saves the tokenizer as (pretty-printed) `tokenizer.json` at `path`, atomically.
    ///
    /// The JSON is written to a temporary file in the same directory, flushed to disk and
    /// then renamed over `path`, so a crash never leaves a truncated file at `path`.
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|source| TokenizerError::Serialize { path: path.to_path_buf(), source })?;
        crate::fs::write_atomic(path, json.as_bytes())
            .map_err(|e| TokenizerError::Write { path: e.path, source: e.source })
    }
}
