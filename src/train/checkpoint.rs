//! Checkpoints: `trainer_state.safetensors` (counters, the config hash, and the phase's
//! trainable parameters, optimizer moments and regulariser anchors), the model's weights or a
//! reference to them, and a `manifest.json` of SHA-256 sums.
//!
//! A checkpoint stores what changed. Weights that changed since they were last stored (full
//! training, merged LoRA adapters, a newly initialised model) are saved as an HF model
//! directory, `model/`. Otherwise (soft prompts, conditional prompts, steering, LoRA before it
//! merges, evaluation-only phases, a loaded base model before any of its weights train) the
//! manifest names the weights the run ran on by path and SHA-256: another checkpoint's
//! `model/` (a path relative to the checkpoints folder) or the loaded model's directory (an
//! absolute path). Loading follows the reference and refuses weights whose sums changed.
//!
//! Manifest format [`FORMAT`] (2) is `{"format": 2, "files": {…}, "weights": {…}}`. Format 1,
//! written before references existed, is the bare `files` map of a checkpoint that always
//! holds `model/`; it still loads. Other formats are refused with their number.
//!
//! A checkpoint is written into a temporary directory, every file fsynced, then renamed
//! into place (`checkpoints/step-<N>`), so a crash at any moment leaves either the old set
//! or the new one. Loading verifies every sum and refuses a different config hash.

use super::config::Trainable;
use super::optimizer::OptimizerState;
use super::regularizers::Anchors;
use super::trainable;
use crate::engine::model::Model;
use crate::fs::write_atomic;
use crate::hf::io::{read_safetensors, write_safetensors, HfTensor, ModelDir};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// The manifest format this build writes.
pub const FORMAT: u32 = 2;

/// Counters and tensors that, with the model, determine the rest of the run exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainerState {
    pub config_hash: String,
    /// Index of the phase in progress (== number of phases when the run is done).
    pub phase: usize,
    /// Steps completed in that phase.
    pub step_in_phase: u64,
    pub global_step: u64,
    pub tokens: u64,
    /// What the phase in progress holds besides the weights (empty at a phase boundary).
    pub phase_state: PhaseState,
}

/// The state of a phase in progress, each part saved under its own tensor names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PhaseState {
    /// The parameters of a trainable set that keeps its own (LoRA adapters, a soft prompt, a
    /// steering vector, a conditional-prompt MLP), with its kind; `None` when the phase trains
    /// the weights (they are the model) or nothing.
    pub trainable: Option<(Trainable, Vec<f32>)>,
    pub optimizer: OptimizerState,
    pub anchors: Anchors,
}

/// The weights a checkpoint ran on when it does not store them: a model directory and the
/// SHA-256 of each of its files that the weights are read from (`config.json` and the
/// safetensors), by name relative to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRef {
    /// Relative: another checkpoint's `model/` (`step-<N>/model`, from the checkpoints
    /// folder); absolute: a model directory outside the run.
    pub path: PathBuf,
    pub sha256: BTreeMap<String, String>,
}

/// What a checkpoint holds of the weights.
pub enum Weights<'a> {
    /// The model itself, saved in `model/` with a copy of `tokenizer` (if given).
    Stored { model: &'a Model, tokenizer: Option<&'a Path> },
    /// A reference to the stored weights the model equals.
    Reference(&'a WeightsRef),
}

/// A loaded checkpoint: the model, the trainer state, and the stored weights the model
/// equals (the checkpoint's own `model/`, or the ones it refers to).
pub struct Restored {
    pub model: Model,
    pub state: TrainerState,
    pub weights: WeightsRef,
}

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: checkpoint was written by a run with config hash {found}, but this config hashes to {expected}; refusing to resume a different experiment")]
    ConfigChanged { path: PathBuf, expected: String, found: String },
    #[error("{path}: checkpoint manifest format {found}; this build reads formats 1 and {FORMAT}: use the vestige that wrote it, or start the run again")]
    Format { path: PathBuf, found: String },
    #[error("{checkpoint} holds no weights: it ran on {file}, which had SHA-256 {expected} but now {found}; put the original weights back there, or start the run again (delete its checkpoints)")]
    BaseChanged { checkpoint: PathBuf, file: PathBuf, expected: String, found: String },
    #[error("{checkpoint} holds no weights: it ran on the model in {base}, which cannot be read ({reason}); put that model back there, or start the run again (delete its checkpoints)")]
    BaseMissing { checkpoint: PathBuf, base: PathBuf, reason: String },
    #[error(transparent)]
    Hf(#[from] crate::hf::io::HfError),
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
    #[error(transparent)]
    Load(#[from] crate::engine::hf_model::LoadError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_path_buf(), source }
}

const STATE: &str = "trainer_state.safetensors";
const MANIFEST: &str = "manifest.json";
const PINNED: &str = "PINNED";
const MODEL: &str = "model";

/// `manifest.json`: the SHA-256 of every file of the checkpoint, and the weights it refers
/// to when it stores none.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: u32,
    files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weights: Option<WeightsRef>,
}

/// The directory of the checkpoint at `step`.
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Writes a checkpoint of `state` atomically, with `weights`; `pin` (e.g. "init" or a phase
/// name) exempts it from retention and makes it findable by [`find_pinned`].
pub fn save(
    root: &Path,
    weights: Weights,
    state: &TrainerState,
    pin: Option<&str>,
) -> Result<PathBuf, CheckpointError> {
    fs::create_dir_all(root).map_err(io_err(root))?;
    let final_dir = step_dir(root, state.global_step);
    let tmp = root.join(format!(".tmp-step-{:08}-{}", state.global_step, std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let reference = match weights {
        Weights::Stored { model, tokenizer } => {
            model.save(&tmp.join(MODEL), tokenizer)?;
            None
        }
        Weights::Reference(r) => Some(r.clone()),
    };
    write_safetensors(&tmp.join(STATE), &state_tensors(state), Some(&state_metadata(state)))?;
    if let Some(name) = pin {
        write_atomic(&tmp.join(PINNED), name.as_bytes())?;
    }
    let manifest = Manifest { format: FORMAT, files: sums_of(&tmp)?, weights: reference };
    write_atomic(&tmp.join(MANIFEST), &serde_json::to_vec_pretty(&manifest).expect("a manifest serialises"))?;
    if final_dir.exists() {
        fs::remove_dir_all(&final_dir).map_err(io_err(&final_dir))?;
    }
    fs::rename(&tmp, &final_dir).map_err(io_err(&final_dir))?;
    fs::File::open(root).and_then(|d| d.sync_all()).map_err(io_err(root))?;
    Ok(final_dir)
}

/// SHA-256 of every file under `dir` (relative paths), except the manifest itself.
fn sums_of(dir: &Path) -> Result<BTreeMap<String, String>, CheckpointError> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(io_err(&d))? {
            let path = entry.map_err(io_err(&d))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name() != Some(MANIFEST.as_ref()) {
                let rel = path.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                out.insert(rel, sha256_of(&path)?);
            }
        }
    }
    Ok(out)
}

/// The SHA-256 of a file, in hex, read in pieces (weights can be larger than memory allows
/// twice over).
fn sha256_of(path: &Path) -> Result<String, CheckpointError> {
    let mut file = fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf).map_err(io_err(path))? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn state_tensors(state: &TrainerState) -> crate::hf::io::TensorMap {
    let s = &state.phase_state;
    let trainable = s.trainable.iter().filter_map(|(kind, v)| Some((trainable::checkpoint_key(*kind)?, v)));
    trainable
        .chain(s.optimizer.tensors())
        .chain(s.anchors.tensors())
        .map(|(k, v)| (k.to_string(), HfTensor { shape: vec![v.len()], data: v.clone() }))
        .collect()
}

fn state_metadata(s: &TrainerState) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("config_hash".into(), s.config_hash.clone()),
        ("phase".into(), s.phase.to_string()),
        ("step_in_phase".into(), s.step_in_phase.to_string()),
        ("global_step".into(), s.global_step.to_string()),
        ("tokens".into(), s.tokens.to_string()),
        ("opt_step".into(), s.phase_state.optimizer.step.to_string()),
    ])
}

/// Complete checkpoints (those with a manifest), oldest first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            e.path().join(MANIFEST).is_file().then(|| (step, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The pinned checkpoint named `name` (e.g. "init" or a phase name), if any.
pub fn find_pinned(root: &Path, name: &str) -> Option<PathBuf> {
    list(root).into_iter().map(|(_, p)| p).find(|p| fs::read_to_string(p.join(PINNED)).is_ok_and(|n| n == name))
}

/// Deletes unpinned checkpoints beyond the newest `keep_last`, except those whose weights a
/// kept checkpoint refers to, and abandoned temporaries.
pub fn prune(root: &Path, keep_last: usize) -> Result<(), CheckpointError> {
    let all: Vec<PathBuf> = list(root).into_iter().map(|(_, p)| p).collect();
    let unpinned: Vec<&PathBuf> = all.iter().filter(|p| !p.join(PINNED).exists()).collect();
    let old = &unpinned[..unpinned.len().saturating_sub(keep_last)];
    let mut referenced = Vec::new();
    for dir in all.iter().filter(|p| !old.contains(p)) {
        if let Some(r) = read_manifest(dir)?.weights {
            referenced.extend(referenced_checkpoint(root, &r));
        }
    }
    for dir in old.iter().filter(|p| !referenced.contains(**p)) {
        fs::remove_dir_all(dir).map_err(io_err(dir))?;
    }
    for e in fs::read_dir(root).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with(".tmp-step-") {
            fs::remove_dir_all(e.path()).map_err(io_err(&e.path()))?;
        }
    }
    Ok(())
}

/// The checkpoint (under `root`) whose `model/` a reference names, if it names one.
fn referenced_checkpoint(root: &Path, r: &WeightsRef) -> Option<PathBuf> {
    match r.path.components().next()? {
        Component::Normal(name) if r.path.is_relative() => Some(root.join(name)),
        _ => None,
    }
}

/// Loads and verifies a checkpoint written for the config hashing to `expected_hash`, or
/// to `legacy_hash` by an older build; the state returned carries `expected_hash`.
pub fn load(dir: &Path, expected_hash: &str, legacy_hash: &str) -> Result<Restored, CheckpointError> {
    let manifest = verify_files(dir)?;
    let state_path = dir.join(STATE);
    let meta = crate::hf::io::read_safetensors_metadata(&state_path)?;
    let invalid = |message: String| CheckpointError::Invalid { path: state_path.clone(), message };
    let field = |k: &str| meta.get(k).cloned().ok_or_else(|| invalid(format!("missing `{k}`")));
    let num = |k: &str| -> Result<u64, CheckpointError> {
        field(k)?.parse().map_err(|_| invalid(format!("`{k}` is not a number")))
    };
    let found = field("config_hash")?;
    if found != expected_hash && found != legacy_hash {
        return Err(CheckpointError::ConfigChanged { path: dir.to_path_buf(), expected: expected_hash.into(), found });
    }
    let mut tensors: BTreeMap<String, Vec<f32>> =
        read_safetensors(&state_path)?.into_iter().map(|(k, t)| (k, t.data)).collect();
    let phase_state = PhaseState {
        trainable: trainable::take_saved(&mut tensors),
        optimizer: OptimizerState::from_tensors(&mut tensors, num("opt_step")?),
        anchors: Anchors::from_tensors(&mut tensors),
    };
    if let Some(unknown) = tensors.keys().next() {
        return Err(invalid(format!("unknown tensor `{unknown}`")));
    }
    let state = TrainerState {
        config_hash: expected_hash.into(),
        phase: num("phase")? as usize,
        step_in_phase: num("step_in_phase")?,
        global_step: num("global_step")?,
        tokens: num("tokens")?,
        phase_state,
    };
    let (model, weights) = model_of(dir, manifest)?;
    Ok(Restored { model, state, weights })
}

/// The model of a checkpoint: its own `model/`, or the weights it refers to after checking
/// their sums. Verifies the checkpoint's files first.
pub fn load_model(dir: &Path) -> Result<Model, CheckpointError> {
    Ok(model_of(dir, verify_files(dir)?)?.0)
}

/// The model of the verified checkpoint `dir` with manifest `manifest`, and the stored weights
/// it equals.
fn model_of(dir: &Path, manifest: Manifest) -> Result<(Model, WeightsRef), CheckpointError> {
    let Some(r) = manifest.weights else {
        return Ok((Model::load(&dir.join(MODEL))?.model, weights_of_stored(dir, &manifest.files)?));
    };
    let base = dir.parent().unwrap_or(Path::new(".")).join(&r.path);
    let missing = |e: CheckpointError| CheckpointError::BaseMissing {
        checkpoint: dir.to_path_buf(),
        base: base.clone(),
        reason: e.to_string(),
    };
    let resolved = crate::hf::io::resolve_model_dir(&base).map_err(|e| missing(e.into()))?;
    let found = reference_to(&resolved).map_err(missing)?;
    for name in r.sha256.keys().chain(found.sha256.keys()) {
        let (expected, now) = (r.sha256.get(name), found.sha256.get(name));
        if expected != now {
            return Err(CheckpointError::BaseChanged {
                checkpoint: dir.to_path_buf(),
                file: base.join(name),
                expected: expected.map_or("(no such file)".into(), String::clone),
                found: now.map_or("(no such file)".into(), String::clone),
            });
        }
    }
    Ok((Model::load(&base)?.model, r))
}

/// The stored weights a checkpoint's model equals: its own `model/`, or those it refers to.
pub fn weights_of(dir: &Path) -> Result<WeightsRef, CheckpointError> {
    let manifest = read_manifest(dir)?;
    match manifest.weights {
        Some(r) => Ok(r),
        None => weights_of_stored(dir, &manifest.files),
    }
}

/// The reference to a checkpoint's own `model/`, with the sums its manifest lists.
fn weights_of_stored(dir: &Path, files: &BTreeMap<String, String>) -> Result<WeightsRef, CheckpointError> {
    let model = crate::hf::io::resolve_model_dir(&dir.join(MODEL))?;
    let mut sha256 = BTreeMap::new();
    for file in model_files(&model) {
        let name = file.strip_prefix(&model.root).expect("inside the model dir").to_string_lossy().replace('\\', "/");
        let sum = files.get(&format!("{MODEL}/{name}")).ok_or_else(|| CheckpointError::Invalid {
            path: file.clone(),
            message: "not listed in the manifest".into(),
        })?;
        sha256.insert(name, sum.clone());
    }
    let name = dir.file_name().expect("a checkpoint dir has a name");
    Ok(WeightsRef { path: Path::new(name).join(MODEL), sha256 })
}

/// A reference to the weights of the model directory `model` (outside the run), with the
/// sums of its files as they are now.
pub fn reference_to(model: &ModelDir) -> Result<WeightsRef, CheckpointError> {
    let root = fs::canonicalize(&model.root).map_err(io_err(&model.root))?;
    let mut sha256 = BTreeMap::new();
    for file in model_files(model) {
        let name = file.strip_prefix(&model.root).expect("inside the model dir").to_string_lossy().replace('\\', "/");
        sha256.insert(name, sha256_of(file)?);
    }
    Ok(WeightsRef { path: root, sha256 })
}

/// The files a model's weights are read from.
fn model_files(model: &ModelDir) -> impl Iterator<Item = &PathBuf> {
    std::iter::once(&model.config).chain(&model.weights)
}

/// Reads a checkpoint's manifest, of either format.
fn read_manifest(dir: &Path) -> Result<Manifest, CheckpointError> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    let invalid = |e: serde_json::Error| CheckpointError::Invalid {
        path: path.clone(),
        message: format!("unreadable manifest: {e}"),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(invalid)?;
    match value.get("format") {
        None => Ok(Manifest { format: 1, files: serde_json::from_value(value).map_err(invalid)?, weights: None }),
        Some(v) if v.as_u64() == Some(FORMAT.into()) => serde_json::from_value(value).map_err(invalid),
        Some(v) => Err(CheckpointError::Format { path, found: v.to_string() }),
    }
}

/// Checks every file of a checkpoint against its manifest (and that no listed file is
/// missing). The weights a checkpoint refers to are checked when they are loaded.
pub fn verify(dir: &Path) -> Result<(), CheckpointError> {
    verify_files(dir).map(drop)
}

/// [`verify`], returning the manifest.
fn verify_files(dir: &Path) -> Result<Manifest, CheckpointError> {
    let manifest = read_manifest(dir)?;
    let have = sums_of(dir)?;
    for (file, sum) in &manifest.files {
        match have.get(file) {
            None => {
                return Err(CheckpointError::Invalid {
                    path: dir.join(file),
                    message: "listed in the manifest but missing".into(),
                })
            }
            Some(s) if s != sum => {
                return Err(CheckpointError::Invalid {
                    path: dir.join(file),
                    message: "contents differ from the manifest (corrupt or truncated)".into(),
                })
            }
            _ => {}
        }
    }
    Ok(manifest)
}
