//! Local text corpora as language-modelling tasks.
//!
//! - **Documents**: in a plain-text file, one document per block of lines separated by
//!   blank lines (paragraph-wrapped prose stays whole); in a `.jsonl` file, one document per
//!   line, the string value of a named field.
//! - **Tokenizer**: a given `tokenizer.json`, or a byte-level BPE trained on the corpus with
//!   the `tokenizers` crate and saved atomically where the caller says (its special tokens
//!   `<|pad|>` and `<|endoftext|>` get ids 0 and 1, the project's padding and separator).
//! - **Splits**: a document goes to eval when a hash of its text says so (1 in
//!   [`EVAL_EVERY`]), so train and eval are disjoint by construction (equal documents land in
//!   the same split). Each split is its documents concatenated, each followed by
//!   `<|endoftext|>` when the tokenizer has that token.
//! - **Cache**: the token streams are written once, atomically, to a cache file whose header
//!   records a hash of the corpus bytes, the document format, the tokenizer source and the
//!   tokenizer file; a reopen with the same inputs reads it instead of tokenizing again, any
//!   change retokenizes.
//! - **Samples**: sample `i` is a window of `seq_len` tokens of its split, starting at a
//!   position drawn from a hash of `(seed, split, i)`; every token is scored.
//!
//! [`CorpusSpec`] holds the keys of a `kind = "corpus"` spec.

use super::spec::{default_seq_len, SpecError};
use super::{mix, sample_key, Sample, Split, Task};
use crate::fs::write_atomic;
use crate::hf::io::HfError;
use crate::hf::tokenizer::{Tokenizer, TokenizerError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::AddedToken;

/// One document in this many goes to the eval split.
pub const EVAL_EVERY: u64 = 20;
/// The end-of-document token (also the trained tokenizer's id 1).
pub const END_OF_TEXT: &str = "<|endoftext|>";
/// The trained tokenizer's padding token (id 0).
const PAD_TOKEN: &str = "<|pad|>";
/// First bytes of a token cache file.
const MAGIC: &[u8; 8] = b"VSTGTOK1";

/// Errors from opening a corpus; each names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read corpus {}: {source}; check the task's `path`", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: not a JSON object: {source}", path.display())]
    Json { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("{}:{line}: no string field {field:?} in this record; set the task's `field`", path.display())]
    MissingField { path: PathBuf, line: usize, field: String },
    #[error("corpus {} has no documents (plain text: blocks separated by blank lines; .jsonl: one object per line)", path.display())]
    Empty { path: PathBuf },
    #[error("the {split:?} split of corpus {} has {tokens} tokens, fewer than seq_len = {seq_len}; add documents or shorten seq_len", path.display())]
    TooSmall { path: PathBuf, split: Split, tokens: usize, seq_len: usize },
    #[error("cannot train a BPE tokenizer on {}: {source}", path.display())]
    Train { path: PathBuf, source: tokenizers::Error },
    #[error("repeat text {text:?} needs a base task with a tokenizer that encodes it (a corpus task; give its `tokenizer`, e.g. a pretrained model's tokenizer.json)")]
    NoTokenizer { text: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Write(#[from] HfError),
}

/// How documents are laid out in the corpus file.
#[derive(Clone, Debug, PartialEq)]
pub enum CorpusFormat {
    /// Plain text, documents separated by blank lines.
    Text,
    /// JSON lines; the document is the string field of this name.
    Jsonl(String),
}

/// Where the tokenizer comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenizerSource {
    /// An existing `tokenizer.json`.
    File(PathBuf),
    /// A byte-level BPE of this vocabulary size, trained on the corpus and saved at `save_to`
    /// (reused while the cache says it was trained on the same corpus).
    Train { vocab: usize, save_to: PathBuf },
}

/// Everything [`Corpus::open`] needs.
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusOptions {
    pub path: PathBuf,
    pub format: CorpusFormat,
    pub tokenizer: TokenizerSource,
    /// The token cache file.
    pub cache: PathBuf,
}

/// A tokenized corpus: the token streams of both splits and the tokenizer.
#[derive(Debug)]
pub struct Corpus {
    pub path: PathBuf,
    pub tokenizer: Tokenizer,
    /// The `tokenizer.json` that `tokenizer` was loaded from.
    pub tokenizer_file: PathBuf,
    pub train: Vec<u32>,
    pub eval: Vec<u32>,
}

impl Corpus {
    /// Reads (from the cache when valid) or tokenizes the corpus.
    pub fn open(opts: &CorpusOptions) -> Result<Corpus, CorpusError> {
        let bytes =
            std::fs::read(&opts.path).map_err(|source| CorpusError::Read { path: opts.path.clone(), source })?;
        let source = source_key(&bytes, opts);
        let tokenizer_path = tokenizer_path(opts);
        if tokenizer_path.is_file() {
            if let Some((train, eval)) = read_cache(&opts.cache, &source, &file_hash(tokenizer_path)?) {
                let tokenizer = Tokenizer::from_file(tokenizer_path)?;
                let tokenizer_file = tokenizer_path.to_path_buf();
                return Ok(Corpus { path: opts.path.clone(), tokenizer, tokenizer_file, train, eval });
            }
        }
        let docs = documents(&opts.path, &bytes, &opts.format)?;
        let tokenizer = match &opts.tokenizer {
            TokenizerSource::File(p) => Tokenizer::from_file(p)?,
            TokenizerSource::Train { vocab, save_to } => train_bpe(&opts.path, &docs, *vocab, save_to)?,
        };
        let (train, eval) = tokenize(&docs, &tokenizer)?;
        write_cache(&opts.cache, &source, &file_hash(tokenizer_path)?, &train, &eval)?;
        Ok(Corpus { path: opts.path.clone(), tokenizer, tokenizer_file: tokenizer_path.to_path_buf(), train, eval })
    }

    /// The token stream of `split`.
    pub fn stream(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Eval => &self.eval,
        }
    }
}

/// The tokenizer file that will be used.
fn tokenizer_path(opts: &CorpusOptions) -> &Path {
    match &opts.tokenizer {
        TokenizerSource::File(p) => p,
        TokenizerSource::Train { save_to, .. } => save_to,
    }
}

/// SHA-256 of the tokenizer file at `path`.
fn file_hash(path: &Path) -> Result<[u8; 32], TokenizerError> {
    let bytes = std::fs::read(path).map_err(|source| TokenizerError::Read { path: path.into(), source })?;
    Ok(sha256(&bytes))
}

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// What the cached tokens derive from besides the tokenizer file: corpus bytes, format and
/// tokenizer source.
fn source_key(corpus: &[u8], opts: &CorpusOptions) -> [u8; 32] {
    let source = match &opts.tokenizer {
        TokenizerSource::File(_) => "file".to_string(),
        TokenizerSource::Train { vocab, .. } => format!("bpe {vocab}"),
    };
    let mut h = Sha256::new();
    h.update(corpus);
    h.update(format!("\0{:?}\0{source}", opts.format));
    h.finalize().into()
}

/// The documents of the corpus file, in order.
fn documents(path: &Path, bytes: &[u8], format: &CorpusFormat) -> Result<Vec<String>, CorpusError> {
    let text = String::from_utf8_lossy(bytes);
    let docs: Vec<String> = match format {
        CorpusFormat::Text => paragraphs(&text),
        CorpusFormat::Jsonl(field) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| json_document(path, i + 1, l, field))
            .collect::<Result<_, _>>()?,
    };
    if docs.is_empty() {
        return Err(CorpusError::Empty { path: path.into() });
    }
    Ok(docs)
}

/// Blocks of non-blank lines, each joined with newlines.
fn paragraphs(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        let doc = docs.last_mut().expect("never empty");
        if line.trim().is_empty() {
            if !doc.is_empty() {
                docs.push(String::new());
            }
        } else {
            if !doc.is_empty() {
                doc.push('\n');
            }
            doc.push_str(line);
        }
    }
    docs.retain(|d| !d.is_empty());
    docs
}

/// The string field `field` of JSONL line `line`.
fn json_document(path: &Path, line: usize, text: &str, field: &str) -> Result<String, CorpusError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| CorpusError::Json { path: path.into(), line, source })?;
    match value.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(CorpusError::MissingField { path: path.into(), line, field: field.into() }),
    }
}

/// Trains a byte-level BPE of `vocab` tokens on `docs` and saves it at `save_to`.
fn train_bpe(path: &Path, docs: &[String], vocab: usize, save_to: &Path) -> Result<Tokenizer, CorpusError> {
    let err = |source| CorpusError::Train { path: path.into(), source };
    let mut bpe = tokenizers::Tokenizer::new(BPE::default());
    bpe.with_pre_tokenizer(Some(ByteLevel::default()));
    bpe.with_decoder(Some(ByteLevel::default()));
    let specials = [PAD_TOKEN, END_OF_TEXT].map(|t| AddedToken::from(t, true)).to_vec();
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    bpe.train(&mut trainer, docs.iter()).map_err(err)?;
    write_creating(save_to, bpe.to_string(true).map_err(err)?.as_bytes())?;
    Ok(Tokenizer::from_file(save_to)?)
}

/// The token streams of the train and eval documents.
fn tokenize(docs: &[String], tokenizer: &Tokenizer) -> Result<(Vec<u32>, Vec<u32>), CorpusError> {
    let end = tokenizer.token_to_id(END_OF_TEXT);
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for doc in docs {
        let stream = if is_eval(doc) { &mut eval } else { &mut train };
        stream.extend(tokenizer.encode(doc)?);
        stream.extend(end);
    }
    Ok((train, eval))
}

/// Whether a document belongs to the eval split (a hash of its text).
pub fn is_eval(doc: &str) -> bool {
    let h = sha256(doc.as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % EVAL_EVERY == 0
}

/// Writes the cache: magic, source key, tokenizer hash, both stream lengths, the tokens.
fn write_cache(path: &Path, source: &[u8; 32], tok: &[u8; 32], train: &[u32], eval: &[u32]) -> Result<(), HfError> {
    let mut bytes = Vec::with_capacity(88 + 4 * (train.len() + eval.len()));
    bytes.extend(MAGIC);
    bytes.extend(source);
    bytes.extend(tok);
    bytes.extend((train.len() as u64).to_le_bytes());
    bytes.extend((eval.len() as u64).to_le_bytes());
    bytes.extend(train.iter().chain(eval).flat_map(|t| t.to_le_bytes()));
    write_creating(path, &bytes)
}

/// [`write_atomic`], creating the parent directory first.
fn write_creating(path: &Path, bytes: &[u8]) -> Result<(), HfError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| HfError::Io { path: dir.into(), source })?;
    }
    Ok(write_atomic(path, bytes)?)
}

/// The cached streams, if the cache exists, is whole and matches both keys.
fn read_cache(path: &Path, source: &[u8; 32], tok: &[u8; 32]) -> Option<(Vec<u32>, Vec<u32>)> {
    let bytes = std::fs::read(path).ok()?;
    let header = bytes.get(..88)?;
    if &header[..8] != MAGIC || &header[8..40] != source || &header[40..72] != tok {
        return None;
    }
    let n_train = u64::from_le_bytes(header[72..80].try_into().ok()?) as usize;
    let n_eval = u64::from_le_bytes(header[80..88].try_into().ok()?) as usize;
    if bytes.len() != 88 + 4 * (n_train + n_eval) {
        return None;
    }
    let mut tokens = bytes[88..].chunks_exact(4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    Some((tokens.by_ref().take(n_train).collect(), tokens.collect()))
}

/// The keys of a `corpus` spec.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// The text file (`.jsonl`: JSON lines, the document in `field`).
    pub path: Option<PathBuf>,
    #[serde(default = "default_field")]
    pub field: String,
    /// Its `tokenizer.json`; without one a BPE of `bpe_vocab` tokens is trained.
    pub tokenizer: Option<PathBuf>,
    #[serde(default = "default_bpe_vocab")]
    pub bpe_vocab: usize,
    /// The directory of the token cache and a trained tokenizer (default `<path>.cache`).
    pub cache_dir: Option<PathBuf>,
    /// Tokens per sample.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
}

fn default_field() -> String {
    "text".into()
}
fn default_bpe_vocab() -> usize {
    1024
}

impl CorpusSpec {
    /// A corpus file, a BPE vocabulary that holds the bytes and special tokens, and windows of
    /// at least 2 tokens.
    pub fn check(&self) -> Result<(), SpecError> {
        if self.path.is_none() {
            return Err(SpecError::new("path", "give the corpus file (text or .jsonl)"));
        }
        if self.tokenizer.is_none() && self.bpe_vocab < 258 {
            return Err(SpecError::new("bpe_vocab", "must be at least 258 (256 bytes and 2 special tokens)"));
        }
        if self.seq_len < 2 {
            return Err(SpecError::new("seq_len", "must be at least 2"));
        }
        Ok(())
    }

    /// Where the corpus, its tokenizer and its cache are.
    pub fn options(&self) -> CorpusOptions {
        let path = self.path.clone().unwrap_or_default();
        let cache = self.cache_dir.clone().unwrap_or_else(|| format!("{}.cache", path.display()).into());
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let format = if jsonl { CorpusFormat::Jsonl(self.field.clone()) } else { CorpusFormat::Text };
        let tokenizer = match &self.tokenizer {
            Some(file) => TokenizerSource::File(file.clone()),
            None => TokenizerSource::Train { vocab: self.bpe_vocab, save_to: cache.join("tokenizer.json") },
        };
        CorpusOptions { path, format, tokenizer, cache: cache.join("tokens.bin") }
    }

    /// The task named `name`, over the corpus opened (and tokenized, or read from its cache).
    pub fn build(&self, name: &str) -> Result<CorpusTask, CorpusError> {
        CorpusTask::new(name.to_string(), Arc::new(Corpus::open(&self.options())?), self.seq_len)
    }
}

/// Windows of `seq_len` tokens from a corpus; every token is scored.
#[derive(Clone, Debug)]
pub struct CorpusTask {
    pub name: String,
    pub corpus: Arc<Corpus>,
    seq_len: usize,
    vocab: usize,
}

impl CorpusTask {
    /// A task over `corpus` (its vocabulary covers the tokenizer and every id in the corpus);
    /// both splits must hold at least `seq_len` tokens.
    pub fn new(name: String, corpus: Arc<Corpus>, seq_len: usize) -> Result<CorpusTask, CorpusError> {
        for split in [Split::Train, Split::Eval] {
            let tokens = corpus.stream(split).len();
            if tokens < seq_len {
                return Err(CorpusError::TooSmall { path: corpus.path.clone(), split, tokens, seq_len });
            }
        }
        let widest = corpus.train.iter().chain(&corpus.eval).max().map_or(0, |&t| t as usize + 1);
        let vocab = corpus.tokenizer.vocab_size().max(widest);
        Ok(CorpusTask { name, corpus, seq_len, vocab })
    }
}

impl Task for CorpusTask {
    fn name(&self) -> &str {
        &self.name
    }

    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn seq_len(&self) -> usize {
        self.seq_len
    }

    fn sample(&self, seed: u64, split: Split, index: u64) -> Sample {
        let stream = self.corpus.stream(split);
        let starts = (stream.len() - self.seq_len + 1) as u64;
        let start = (mix(sample_key(seed, &self.name, split, index)) % starts) as usize;
        let tokens = stream[start..start + self.seq_len].to_vec();
        let weights = (0..self.seq_len).map(|t| if t == 0 { 0.0 } else { 1.0 }).collect();
        Sample::new(tokens, weights, 1)
    }

    fn tokenizer_file(&self) -> Option<&Path> {
        Some(&self.corpus.tokenizer_file)
    }

    /// The decoded text (token ids if they do not decode).
    fn render(&self, sample: &Sample) -> String {
        let ids = || sample.tokens.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
        self.corpus.tokenizer.decode(&sample.tokens).unwrap_or_else(|_| ids())
    }
}
