//! Architecture-agnostic Hugging Face checkpoint I/O.
//!
//! This module resolves model directories and moves named f32 tensors; it knows nothing
//! about architectures.
//!
//! - [`resolve_model_dir`] accepts a plain model directory (`config.json` plus
//!   `model.safetensors` or a sharded `model.safetensors.index.json`) or the Hugging Face
//!   cache layout (a `models--ORG--NAME` folder or one of its `snapshots/REV` folders,
//!   whose files are usually symlinks into `blobs/`).
//! - [`load_tensors`] / [`read_safetensors`] read F32, F16, BF16 and F64 tensors as f32,
//!   skip integer and boolean buffers, and reject every truncated or corrupt file with an
//!   [`HfError`] naming the file (and the tensor where relevant).
//! - [`write_safetensors`] / [`save_model_dir`] write files atomically (through
//!   [`crate::fs`]):
//!   a crash never leaves a half-written file under the final name.

use crate::fs::write_atomic;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Component, Path, PathBuf};

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};

const CONFIG: &str = "config.json";
const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const TOKENIZER: &str = "tokenizer.json";

/// One named tensor in f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HfTensor {
    /// Dimensions, outermost first; the empty shape is a scalar.
    pub shape: Vec<usize>,
    /// Row-major values; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

/// Tensors by name, in name order.
pub type TensorMap = BTreeMap<String, HfTensor>;

/// A resolved model directory: every path here existed when it was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    /// The directory holding the model files (for the cache layout, the snapshot folder).
    pub root: PathBuf,
    /// `config.json`.
    pub config: PathBuf,
    /// `model.safetensors`, or every shard named by `model.safetensors.index.json`, sorted.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`, if present.
    pub tokenizer: Option<PathBuf>,
}

/// Errors from resolving, reading or writing Hugging Face files.
///
/// Every variant names the file or directory involved, and the tensor where relevant.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// The given path is not an existing directory.
    #[error("{} is not a directory; pass a Hugging Face model directory, a `models--ORG--NAME` cache folder or one of its `snapshots/REV` folders", path.display())]
    NotADirectory {
        /// The path that was given.
        path: PathBuf,
    },
    /// An atomic write failed.
    #[error(transparent)]
    Write(#[from] crate::fs::FsError),
    /// A file or directory could not be read or written.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model directory has no `config.json`.
    #[error("expected config.json in {}; is this a Hugging Face model directory?", dir.display())]
    MissingConfig {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// The model directory has neither `model.safetensors` nor a shard index.
    #[error("no weights in {}: looked for model.safetensors and model.safetensors.index.json; only safetensors checkpoints are supported (re-save *.bin checkpoints with `save_pretrained(..., safe_serialization=True)`)", dir.display())]
    MissingWeights {
        /// The directory that was searched.
        dir: PathBuf,
    },
    /// A symlink (usually a cache snapshot entry) points at a file that does not exist.
    #[error("{} is a broken symlink (its blob is missing); the download is incomplete, re-download the model", path.display())]
    BrokenLink {
        /// The dangling link.
        path: PathBuf,
    },
    /// A `models--ORG--NAME` cache folder does not designate a usable snapshot.
    #[error("cannot choose a snapshot in {}: {reason}", dir.display())]
    NoSnapshot {
        /// The cache folder.
        dir: PathBuf,
        /// What was looked for and not found.
        reason: String,
    },
    /// A JSON file (config or shard index) does not parse.
    #[error("invalid JSON in {}: {source}", path.display())]
    Json {
        /// The JSON file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON file parses but does not have the expected structure.
    #[error("invalid {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A shard named by the index is not on disk.
    #[error("shard {} listed in {} does not exist; the download is incomplete, re-download the model", shard.display(), index.display())]
    MissingShard {
        /// The shard index.
        index: PathBuf,
        /// The missing shard.
        shard: PathBuf,
    },
    /// A safetensors file is truncated or corrupt.
    #[error("{} is not a valid safetensors file: {reason}; the file is truncated or corrupt, re-download or re-export it", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// A floating-point tensor has a dtype that cannot be converted to f32.
    #[error("tensor `{tensor}` in {} has unsupported dtype {dtype}; only F32, F16, BF16 and F64 can be loaded (convert the checkpoint first)", path.display())]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// The same tensor name occurs in two files of one checkpoint.
    #[error("tensor `{tensor}` appears in both {} and {}; the checkpoint's shards overlap", first.display(), second.display())]
    DuplicateTensor {
        /// The tensor.
        tensor: String,
        /// The file where it was seen first.
        first: PathBuf,
        /// The file where it was seen again.
        second: PathBuf,
    },
    /// The shard index assigns a tensor to a shard that does not contain it.
    #[error("tensor `{tensor}` is listed in {} as stored in {} but that shard does not contain it; the shard is stale or corrupt, re-download the model", index.display(), shard.display())]
    MissingTensor {
        /// The shard index.
        index: PathBuf,
        /// The shard the index names.
        shard: PathBuf,
        /// The tensor.
        tensor: String,
    },
    /// A tensor to be written has `data.len()` different from the product of its shape.
    #[error("cannot write tensor `{tensor}` to {}: shape {shape:?} needs {expected} values but data has {actual}", path.display())]
    ShapeMismatch {
        /// The destination file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its declared shape.
        shape: Vec<usize>,
        /// The product of the shape.
        expected: usize,
        /// `data.len()`.
        actual: usize,
    },
    /// The safetensors crate refused to serialize the tensors.
    #[error("cannot write {}: {reason}", path.display())]
    Serialize {
        /// The destination file.
        path: PathBuf,
        /// The serializer's error.
        reason: String,
    },
}

/// Builds a `map_err` closure that attaches `path` to an I/O error.
fn io(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io { path: path.to_path_buf(), source }
}

// ---------------------------------------------------------------------------------------
// Resolving model directories
// ---------------------------------------------------------------------------------------

/// Resolves a model directory: a plain directory with `config.json` and safetensors
/// weights, a `models--ORG--NAME` cache folder (revision from `refs/main`, else its only
/// snapshot), or a cache `snapshots/REV` folder. Symlinks are followed.
pub fn resolve_model_dir(path: &Path) -> Result<ModelDir, HfError> {
    if !path.is_dir() {
        return Err(HfError::NotADirectory { path: path.to_path_buf() });
    }
    // A cache repo folder holds `snapshots/` instead of the model files themselves.
    let root = if !path.join(CONFIG).exists() && path.join("snapshots").is_dir() {
        cache_snapshot(path)?
    } else {
        path.to_path_buf()
    };
    resolve_plain_dir(&root)
}

/// Picks the snapshot folder of a `models--ORG--NAME` cache folder.
fn cache_snapshot(repo: &Path) -> Result<PathBuf, HfError> {
    let refs_main = repo.join("refs").join("main");
    if refs_main.is_file() {
        let rev = fs::read_to_string(&refs_main).map_err(io(&refs_main))?;
        return named_snapshot(repo, rev.trim());
    }
    let snapshots = repo.join("snapshots");
    match subdirectories(&snapshots)?.as_slice() {
        [rev] => Ok(snapshots.join(rev)),
        [] => Err(no_snapshot(repo, "there is no refs/main and snapshots/ is empty")),
        many => Err(no_snapshot(
            repo,
            &format!(
                "there is no refs/main and snapshots/ holds {} revisions ({}); pass the snapshots/REV folder you want",
                many.len(),
                many.join(", ")
            ),
        )),
    }
}

/// Sorted names of the directories (or links to directories) inside `dir`.
fn subdirectories(dir: &Path) -> Result<Vec<String>, HfError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The snapshot folder that `refs/main` names; `rev` must be a plain folder name.
fn named_snapshot(repo: &Path, rev: &str) -> Result<PathBuf, HfError> {
    if !is_plain_file_name(rev) {
        return Err(no_snapshot(repo, &format!("refs/main holds {rev:?}, which is not a revision name")));
    }
    let snapshot = repo.join("snapshots").join(rev);
    if !snapshot.is_dir() {
        return Err(no_snapshot(
            repo,
            &format!("refs/main names revision {rev} but snapshots/{rev} does not exist; re-download the model"),
        ));
    }
    Ok(snapshot)
}

fn no_snapshot(repo: &Path, reason: &str) -> HfError {
    HfError::NoSnapshot { dir: repo.to_path_buf(), reason: reason.to_string() }
}

/// True if `name` is one normal path component (no separators, `.` or `..`).
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None))
}

/// Resolves a directory that holds the model files directly.
fn resolve_plain_dir(root: &Path) -> Result<ModelDir, HfError> {
    let config = existing_file(root.join(CONFIG))?.ok_or_else(|| HfError::MissingConfig { dir: root.to_path_buf() })?;
    Ok(ModelDir {
        root: root.to_path_buf(),
        config,
        weights: weight_files(root)?,
        tokenizer: existing_file(root.join(TOKENIZER))?,
    })
}

/// `Some(path)` if `path` is a file (symlinks followed), `None` if absent; a dangling
/// symlink is an error rather than "absent".
fn existing_file(path: PathBuf) -> Result<Option<PathBuf>, HfError> {
    match fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(Some(path)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if fs::symlink_metadata(&path).is_ok() {
                Err(HfError::BrokenLink { path })
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(HfError::Io { path, source: e }),
    }
}

/// `model.safetensors` if present (as `transformers` prefers), else the index's shards.
fn weight_files(root: &Path) -> Result<Vec<PathBuf>, HfError> {
    if let Some(single) = existing_file(root.join(SINGLE))? {
        return Ok(vec![single]);
    }
    let index = existing_file(root.join(INDEX))?.ok_or_else(|| HfError::MissingWeights { dir: root.to_path_buf() })?;
    let shards: BTreeSet<String> = read_weight_map(&index)?.into_values().collect();
    shards
        .into_iter()
        .map(|shard| {
            existing_file(root.join(&shard))?
                .ok_or_else(|| HfError::MissingShard { index: index.clone(), shard: root.join(&shard) })
        })
        .collect()
}

/// The index's `weight_map` (tensor name → shard file name); non-empty, plain file names.
fn read_weight_map(index: &Path) -> Result<BTreeMap<String, String>, HfError> {
    let invalid = |reason: String| HfError::Invalid { path: index.to_path_buf(), reason };
    let json = read_json(index)?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid("it has no \"weight_map\" object".into()))?;
    if map.is_empty() {
        return Err(invalid("its \"weight_map\" is empty".into()));
    }
    map.iter()
        .map(|(tensor, shard)| match shard.as_str() {
            Some(s) if is_plain_file_name(s) => Ok((tensor.clone(), s.to_string())),
            _ => Err(invalid(format!("tensor `{tensor}` maps to {shard}, not a shard file name"))),
        })
        .collect()
}

/// Reads and parses a JSON file.
fn read_json(path: &Path) -> Result<serde_json::Value, HfError> {
    let bytes = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&bytes).map_err(|source| HfError::Json { path: path.to_path_buf(), source })
}

/// Reads `config.json`; it must be a JSON object.
pub fn read_config(dir: &ModelDir) -> Result<serde_json::Value, HfError> {
    let config = read_json(&dir.config)?;
    if !config.is_object() {
        return Err(HfError::Invalid { path: dir.config.clone(), reason: "it is not a JSON object".into() });
    }
    Ok(config)
}

// ---------------------------------------------------------------------------------------
// Reading tensors
// ---------------------------------------------------------------------------------------

/// Loads every float tensor of the checkpoint as f32 (integer/bool buffers are skipped).
///
/// Fails on any corrupt shard, on a tensor name found in two shards, and, for sharded
/// checkpoints, on a `weight_map` entry whose shard does not contain that tensor.
pub fn load_tensors(dir: &ModelDir) -> Result<TensorMap, HfError> {
    let mut tensors = TensorMap::new();
    let mut origin = BTreeMap::new();
    for file in &dir.weights {
        read_into(file, &mut tensors, &mut origin)?;
    }
    if let Some(index) = shard_index(dir) {
        check_weight_map(&index, &dir.root, &origin)?;
    }
    Ok(tensors)
}

/// The shard index the weights came from: `None` for a single `model.safetensors`.
fn shard_index(dir: &ModelDir) -> Option<PathBuf> {
    let single = matches!(dir.weights.as_slice(), [w] if w.file_name() == Some(SINGLE.as_ref()));
    let index = dir.root.join(INDEX);
    (!single && index.is_file()).then_some(index)
}

/// Every `weight_map` entry must have been read from the shard it names.
fn check_weight_map(index: &Path, root: &Path, origin: &BTreeMap<String, PathBuf>) -> Result<(), HfError> {
    for (tensor, shard) in read_weight_map(index)? {
        let found = origin.get(&tensor).and_then(|p| p.file_name());
        if found != Some(shard.as_ref()) {
            return Err(HfError::MissingTensor { index: index.to_path_buf(), shard: root.join(shard), tensor });
        }
    }
    Ok(())
}

/// Reads one safetensors file; every float tensor is converted to f32, integer and bool
/// buffers are skipped.
pub fn read_safetensors(path: &Path) -> Result<TensorMap, HfError> {
    let mut tensors = TensorMap::new();
    read_into(path, &mut tensors, &mut BTreeMap::new())?;
    Ok(tensors)
}

/// Reads one integer tensor (I64 or I32) by name, e.g. `input_ids`.
pub fn read_int_tensor(path: &Path, name: &str) -> Result<(Vec<usize>, Vec<i64>), HfError> {
    let buf = map_file(path)?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| corrupt(path, &e, &buf))?;
    let view = st
        .tensor(name)
        .map_err(|_| HfError::Invalid { path: path.to_path_buf(), reason: format!("no tensor named `{name}`") })?;
    let data = match view.dtype() {
        Dtype::I64 => view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect(),
        Dtype::I32 => view.data().chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64).collect(),
        other => {
            return Err(HfError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: format!("{other:?} (expected I64 or I32)"),
            })
        }
    };
    Ok((view.shape().to_vec(), data))
}

/// Reads the `__metadata__` string map of a safetensors file (empty if it has none).
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, HfError> {
    let buf = map_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&buf).map_err(|e| corrupt(path, &e, &buf))?;
    Ok(meta.metadata().clone().unwrap_or_default().into_iter().collect())
}

/// Parses `path` and adds its tensors to `tensors`; `origin` records the file of every
/// tensor name seen (skipped ones included) so duplicates across files are caught.
fn read_into(path: &Path, tensors: &mut TensorMap, origin: &mut BTreeMap<String, PathBuf>) -> Result<(), HfError> {
    let buf = map_file(path)?;
    let st = SafeTensors::deserialize(&buf).map_err(|e| corrupt(path, &e, &buf))?;
    for (name, view) in st.iter() {
        if let Some(first) = origin.insert(name.to_string(), path.to_path_buf()) {
            return Err(HfError::DuplicateTensor { tensor: name.to_string(), first, second: path.to_path_buf() });
        }
        if let Some(data) = to_f32(path, name, view.dtype(), view.data())? {
            tensors.insert(name.to_string(), HfTensor { shape: view.shape().to_vec(), data });
        }
    }
    Ok(())
}

/// Memory-maps a file read-only.
fn map_file(path: &Path) -> Result<memmap2::Mmap, HfError> {
    let file = File::open(path).map_err(io(path))?;
    // SAFETY: the mapping is read-only and every tensor is copied out before it is
    // dropped. A concurrent writer truncating the file is outside this module's contract,
    // as for every mmap-based safetensors loader.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io(path))
}

/// Converts little-endian tensor bytes to f32; `None` for integer and bool buffers.
/// `bytes.len()` is a whole number of elements (safetensors validated it).
fn to_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Option<Vec<f32>>, HfError> {
    let data = match dtype {
        Dtype::F32 => decode(bytes, f32::from_le_bytes),
        Dtype::F16 => decode(bytes, |b| f16::from_le_bytes(b).to_f32()),
        Dtype::BF16 => decode(bytes, |b| bf16::from_le_bytes(b).to_f32()),
        // Narrowing as torch's `.float()` does: out-of-range values become ±inf.
        Dtype::F64 => decode(bytes, |b| f64::from_le_bytes(b) as f32),
        Dtype::BOOL
        | Dtype::U8
        | Dtype::I8
        | Dtype::U16
        | Dtype::I16
        | Dtype::U32
        | Dtype::I32
        | Dtype::U64
        | Dtype::I64 => return Ok(None),
        other => {
            return Err(HfError::UnsupportedDtype {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                dtype: other.to_string(),
            })
        }
    };
    Ok(Some(data))
}

/// Decodes consecutive `N`-byte elements.
fn decode<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes.as_chunks::<N>().0.iter().map(|&chunk| f(chunk)).collect()
}

/// Turns a safetensors parse error into [`HfError::Corrupt`] with a reason in file terms.
fn corrupt(path: &Path, err: &SafeTensorError, buf: &[u8]) -> HfError {
    let len = buf.len();
    let declared_header = buf.first_chunk::<8>().map(|b| u64::from_le_bytes(*b));
    let reason = match err {
        SafeTensorError::HeaderTooSmall => {
            format!("the file is {len} bytes, shorter than the 8-byte header-length prefix")
        }
        SafeTensorError::InvalidHeaderLength | SafeTensorError::HeaderTooLarge => format!(
            "the header-length prefix says {} bytes but the whole file is {len} bytes",
            declared_header.unwrap_or_default()
        ),
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderStart => {
            "the header is not UTF-8 text".to_string()
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("the header is not valid safetensors JSON ({e})")
        }
        SafeTensorError::MetadataIncompleteBuffer => match declared_size(buf) {
            Some(want) => {
                format!("the header describes a {want}-byte file but the file is {len} bytes")
            }
            None => format!("the tensor data does not end at the end of the file ({len} bytes)"),
        },
        SafeTensorError::InvalidOffset(name) => {
            format!("tensor `{name}` has out-of-range or overlapping data offsets")
        }
        other => other.to_string(),
    };
    HfError::Corrupt { path: path.to_path_buf(), reason }
}

/// The file size a header declares: prefix + header + largest data end offset.
fn declared_size(buf: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(*buf.first_chunk::<8>()?);
    let header = buf.get(8..8usize.checked_add(usize::try_from(n).ok()?)?)?;
    let json: serde_json::Value = serde_json::from_slice(header).ok()?;
    let end = json.as_object()?.values().filter_map(|t| t.get("data_offsets")?.get(1)?.as_u64()).max().unwrap_or(0);
    Some(8 + n + end)
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// An f32 tensor as the safetensors serializer sees it; bytes are produced on demand so
/// only one tensor is ever duplicated in memory.
struct F32View<'a>(&'a HfTensor);

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.data.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.0.data.len() * size_of::<f32>()
    }
}

/// Writes `tensors` as a standard F32 safetensors file, atomically.
///
/// `metadata` becomes the `__metadata__` map; `"format": "pt"` is added unless given, so
/// `transformers` accepts the file. Tensor bytes are deterministic; the order of several
/// metadata keys in the header is not (the safetensors crate keeps them in a `HashMap`).
pub fn write_safetensors(
    path: &Path,
    tensors: &TensorMap,
    metadata: Option<&BTreeMap<String, String>>,
) -> Result<(), HfError> {
    for (name, t) in tensors {
        check_shape(path, name, t)?;
    }
    let mut meta: HashMap<String, String> =
        metadata.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    let views = tensors.iter().map(|(name, t)| (name.as_str(), F32View(t)));
    crate::fs::replace_atomically(path, |tmp| {
        safetensors::serialize_to_file(views, Some(meta), tmp)
            .map_err(|e| HfError::Serialize { path: path.to_path_buf(), reason: e.to_string() })
    })
}

/// `t.data.len()` must equal the product of `t.shape`.
fn check_shape(path: &Path, name: &str, t: &HfTensor) -> Result<(), HfError> {
    let expected: usize = t.shape.iter().product();
    if expected == t.data.len() {
        return Ok(());
    }
    Err(HfError::ShapeMismatch {
        path: path.to_path_buf(),
        tensor: name.to_string(),
        shape: t.shape.clone(),
        expected,
        actual: t.data.len(),
    })
}

/// Writes a model directory that [`resolve_model_dir`] and `transformers` can load:
/// `model.safetensors`, `tokenizer.json` (copied, if given) and pretty `config.json`, each
/// atomically. Creates `out` if needed. `config.json` is written last.
pub fn save_model_dir(
    out: &Path,
    config: &serde_json::Value,
    tensors: &TensorMap,
    tokenizer: Option<&Path>,
) -> Result<(), HfError> {
    fs::create_dir_all(out).map_err(io(out))?;
    let config_path = out.join(CONFIG);
    let mut config_bytes =
        serde_json::to_vec_pretty(config).map_err(|source| HfError::Json { path: config_path.clone(), source })?;
    config_bytes.push(b'\n');
    let tokenizer_bytes = tokenizer.map(|t| fs::read(t).map_err(io(t))).transpose()?;
    write_safetensors(&out.join(SINGLE), tensors, None)?;
    if let Some(bytes) = tokenizer_bytes {
        write_atomic(&out.join(TOKENIZER), &bytes)?;
    }
    Ok(write_atomic(&config_path, &config_bytes)?)
}
