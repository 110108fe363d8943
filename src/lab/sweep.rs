//! Sweeps: the `[sweep]` table maps key paths of the experiment (`model.scale`,
//! `phases[1].l2_coef`, `seed`; several paths joined by `|` move together) to lists of
//! values, and the grid is their product. A linked axis takes either one value for all its
//! paths or, when a value is a list with one entry per path, one entry each:
//! `"decay.regularizer|decay.strength" = [["none", 0.0], ["l2", 1.0]]`. A key path must lead through tables and array
//! entries that exist; its last key may be new.

/// One axis: the key paths it sets and the values it takes.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// As written in `[sweep]`, e.g. `tasks[0].overlap|tasks[1].overlap`.
    pub key: String,
    pub paths: Vec<String>,
    pub values: Vec<toml::Value>,
}

impl Axis {
    /// The value each path takes at `value`: one entry each for a per-path list, else `value`.
    pub fn split(&self, value: &toml::Value) -> Vec<toml::Value> {
        match value {
            toml::Value::Array(a) if self.paths.len() > 1 && a.len() == self.paths.len() => a.clone(),
            v => vec![v.clone(); self.paths.len()],
        }
    }

    /// The short label used in cell ids: see [`label_of`].
    pub fn label(&self) -> String {
        label_of(&self.key)
    }
}

/// The axes of a `[sweep]` table, `seed` last, the rest in key order; every value must be a
/// non-empty array.
pub fn axes(sweep: &toml::Table) -> Result<Vec<Axis>, (String, String)> {
    let mut out = Vec::new();
    for (key, value) in sweep {
        let values = match value {
            toml::Value::Array(a) if !a.is_empty() => a.clone(),
            _ => return Err((format!("sweep.{key}"), "must be a non-empty list of values".into())),
        };
        let paths = key.split('|').map(|p| p.trim().to_string()).collect();
        out.push(Axis { key: key.clone(), paths, values });
    }
    out.sort_by_key(|a| a.key == "seed");
    Ok(out)
}

/// Every grid point: for each, the index of each axis's value (last axis fastest).
pub fn grid(axes: &[Axis]) -> Vec<Vec<usize>> {
    let mut points = vec![Vec::new()];
    for axis in axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..axis.values.len()).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    points
}

/// One step of a key path.
enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// `a.b[2].c` → keys and indices.
fn parts(path: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    for segment in path.split('.') {
        let (key, rest) = segment.split_once('[').unwrap_or((segment, ""));
        if key.is_empty() {
            return Err(format!("{path:?} is not a key path like model.d_model or phases[1].optimizer.lr"));
        }
        out.push(Part::Key(key));
        for index in rest.split('[').filter(|s| !s.is_empty()) {
            let n = index.trim_end_matches(']').parse().map_err(|_| format!("bad index in key path {path:?}"))?;
            out.push(Part::Index(n));
        }
    }
    Ok(out)
}

/// Sets `path` in `root` to `value`; missing tables on the way are created, arrays must
/// already hold the indexed entry.
pub fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) -> Result<(), String> {
    let parts = parts(path)?;
    let mut node = root;
    let mut parts_iter = parts.iter().peekable();
    while let Some(part) = parts_iter.next() {
        let Part::Key(key) = part else { return Err(format!("{path:?} must start with a key")) };
        let mut slot = match parts_iter.peek() {
            None => {
                node.insert(key.to_string(), value);
                return Ok(());
            }
            Some(_) => node.entry(key.to_string()).or_insert_with(|| toml::Value::Table(Default::default())),
        };
        while let Some(Part::Index(i)) = parts_iter.peek() {
            parts_iter.next();
            let len = slot.as_array().map_or(0, Vec::len);
            slot = slot
                .as_array_mut()
                .and_then(|a| a.get_mut(*i))
                .ok_or_else(|| format!("{path:?}: {key} has {len} entries, so index {i} does not exist"))?;
            if parts_iter.peek().is_none() {
                *slot = value;
                return Ok(());
            }
        }
        node = slot.as_table_mut().ok_or_else(|| format!("{path:?}: {key} is not a table"))?;
    }
    Ok(())
}

/// The short name of an axis key: the last key of its first path, without indices
/// (`decay.regularizer|decay.strength` → `regularizer`).
pub fn label_of(key: &str) -> String {
    let first = key.split('|').next().unwrap_or_default();
    let last = first.rsplit('.').next().unwrap_or_default();
    last.split('[').next().unwrap_or_default().trim().to_string()
}

/// A value as it appears in a cell id: strings bare, lists joined by `+`, others in TOML
/// form, limited to characters safe in a file name.
pub fn slug(value: &toml::Value) -> String {
    let text = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => return a.iter().map(slug).collect::<Vec<_>>().join("+"),
        v => v.to_string(),
    };
    text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_grid_is_the_product_of_the_axes_with_seed_last() {
        let axes = axes(&table("seed = [0, 1]\n\"model.scale\" = [\"100k\", \"300k\", \"800k\"]")).unwrap();
        assert_eq!(axes[1].key, "seed");
        let g = grid(&axes);
        assert_eq!(g.len(), 6);
        assert_eq!(g[0], vec![0, 0]);
        assert_eq!(g[1], vec![0, 1]);
        assert_eq!(g[5], vec![2, 1]);
    }

    #[test]
    fn set_path_walks_tables_and_array_entries_and_links_paths() {
        let mut t = table("[[tasks]]\nname = \"a\"\n[[tasks]]\nname = \"b\"\n");
        set_path(&mut t, "tasks[1].overlap", toml::Value::Float(0.5)).unwrap();
        set_path(&mut t, "model.d_model", toml::Value::Integer(32)).unwrap();
        assert_eq!(t["tasks"][1]["overlap"].as_float(), Some(0.5));
        assert!(t["tasks"][0].get("overlap").is_none());
        assert_eq!(t["model"]["d_model"].as_integer(), Some(32));
        let e = set_path(&mut t, "tasks[5].overlap", toml::Value::Float(0.5)).unwrap_err();
        assert!(e.contains("index 5"), "{e}");
        let a = axes(&table("\"tasks[0].overlap|tasks[1].overlap\" = [0.0, 1.0]")).unwrap();
        assert_eq!(a[0].paths, vec!["tasks[0].overlap", "tasks[1].overlap"]);
        assert_eq!(a[0].split(&a[0].values[1]), vec![toml::Value::Float(1.0); 2]);
        let b = axes(&table("\"r|s\" = [[\"l2\", 0.5]]")).unwrap();
        assert_eq!(b[0].split(&b[0].values[0]), vec![toml::Value::String("l2".into()), toml::Value::Float(0.5)]);
    }

    #[test]
    fn a_sweep_value_that_is_not_a_list_is_refused() {
        let e = axes(&table("seed = 3")).unwrap_err();
        assert_eq!(e.0, "sweep.seed");
    }

    #[test]
    fn slugs_are_file_name_safe() {
        assert_eq!(slug(&toml::Value::String("a/b c".into())), "a_b_c");
        assert_eq!(slug(&toml::Value::Float(0.25)), "0.25");
        let pair = toml::Value::Array(vec![toml::Value::String("l2".into()), toml::Value::Float(1.0)]);
        assert_eq!(slug(&pair), "l2+1.0");
        assert_eq!(label_of("decay.regularizer|decay.strength"), "regularizer");
        assert_eq!(label_of("tasks[1].overlap"), "overlap");
    }
}
