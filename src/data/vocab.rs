//! Exact vocabularies of task sets as Hugging Face `tokenizer.json` files: a WordLevel model
//! over the tasks' [token texts](super::Task::token_text), split on whitespace, with `<pad>`
//! (id 0) as the special padding token. Encoding [`Task::words`] of any sample gives back
//! exactly its tokens; a word outside the vocabulary is an encoding error (the `unk_token`
//! is deliberately absent from the vocabulary), never a silent substitute.
//!
//! Tasks with a tokenizer of their own (corpora, and wrappers over them) keep it:
//! [`tokenizer_for`] picks that file, or writes the exact vocabulary of the others.

use super::{Task, PAD_TEXT};
use crate::fs::{write_atomic, FsError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a task set has no exact tokenizer, or why writing it failed.
#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    /// Two tasks name the same id differently (e.g. a family marker and a copy symbol).
    #[error("token {id} is {first:?} in task {first_task} but {second:?} in task {second_task}; these tasks cannot share a tokenizer")]
    Conflict { id: u32, first: String, first_task: String, second: String, second_task: String },
    /// Two ids share a text, or a text is empty or holds whitespace.
    #[error("token {id} has text {text:?}, which is empty, holds whitespace or names another token too")]
    BadText { id: u32, text: String },
    /// The tasks do not all read the same tokenizer file (or some read none).
    #[error("task {first_task} takes its tokens from {first} but task {second_task} from {second}; these tasks cannot share a tokenizer")]
    Sources { first: String, first_task: String, second: String, second_task: String },
    #[error(transparent)]
    Write(#[from] FsError),
}

/// `texts[id]` for every id below the largest vocabulary of `tasks`; every task whose
/// vocabulary holds an id must name it the same.
pub fn vocabulary(tasks: &[Arc<dyn Task>]) -> Result<Vec<String>, VocabError> {
    let size = tasks.iter().map(|t| t.vocab_size()).max().unwrap_or(0);
    let mut texts = Vec::with_capacity(size);
    for id in 0..size as u32 {
        let mut owners = tasks.iter().filter(|t| (id as usize) < t.vocab_size());
        let first = owners.next().expect("the largest vocabulary holds every id");
        let text = first.token_text(id);
        if let Some(other) = owners.find(|t| t.token_text(id) != text) {
            return Err(VocabError::Conflict {
                id,
                first: text,
                first_task: first.name().to_string(),
                second: other.token_text(id),
                second_task: other.name().to_string(),
            });
        }
        texts.push(text);
    }
    Ok(texts)
}

/// The `tokenizer.json` text of `tasks`' vocabulary.
pub fn tokenizer_json(tasks: &[Arc<dyn Task>]) -> Result<String, VocabError> {
    let texts = vocabulary(tasks)?;
    let mut vocab = BTreeMap::new();
    for (id, text) in texts.iter().enumerate() {
        let bad = text.is_empty() || text.contains(char::is_whitespace);
        if bad || vocab.insert(text.as_str(), id).is_some() {
            return Err(VocabError::BadText { id: id as u32, text: text.clone() });
        }
    }
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": {
            "strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null,
            "pad_id": 0, "pad_type_id": 0, "pad_token": PAD_TEXT
        },
        "added_tokens": [{
            "id": 0, "content": PAD_TEXT, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true
        }],
        "normalizer": null,
        "pre_tokenizer": { "type": "WhitespaceSplit" },
        "post_processor": null,
        "decoder": null,
        "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "<unk>" },
    });
    Ok(serde_json::to_string_pretty(&json).expect("JSON values serialize"))
}

/// Writes `dir/tokenizer.json` for `tasks` atomically (creating `dir`); returns its path.
pub fn write_tokenizer(dir: &Path, tasks: &[Arc<dyn Task>]) -> Result<PathBuf, VocabError> {
    let json = tokenizer_json(tasks)?;
    std::fs::create_dir_all(dir).map_err(|source| FsError { path: dir.to_path_buf(), source })?;
    let path = dir.join("tokenizer.json");
    write_atomic(&path, json.as_bytes())?;
    Ok(path)
}

/// The `tokenizer.json` of a model trained on `tasks`: the file they all read when they have
/// their own ([`Task::tokenizer_file`]), else their exact vocabulary written into `dir`.
pub fn tokenizer_for(dir: &Path, tasks: &[Arc<dyn Task>]) -> Result<PathBuf, VocabError> {
    let Some(first) = tasks.first() else { return write_tokenizer(dir, tasks) };
    if let Some(other) = tasks.iter().find(|t| t.tokenizer_file() != first.tokenizer_file()) {
        return Err(sources(first, other));
    }
    match first.tokenizer_file() {
        Some(file) => Ok(file.to_path_buf()),
        None => write_tokenizer(dir, tasks),
    }
}

/// The error for two tasks whose tokenizer files differ.
fn sources(first: &Arc<dyn Task>, second: &Arc<dyn Task>) -> VocabError {
    let file = |t: &Arc<dyn Task>| t.tokenizer_file().map_or("its token texts".into(), |p| p.display().to_string());
    VocabError::Sources {
        first: file(first),
        first_task: first.name().to_string(),
        second: file(second),
        second_task: second.name().to_string(),
    }
}
