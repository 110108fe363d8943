//! Finds the line of a key path such as `phases[1].optimizer.lr` in TOML source, so that
//! validation errors found after parsing can still point at the offending line.

use toml_edit::{Document, Item, Table, Value};

/// Where the walk stands: TOML keeps tables of arrays, items and inline values apart.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Table(&'a Table),
    Value(&'a Value),
}

/// One step of a key path.
enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

/// 1-based line of the deepest element of `path` that exists (1 if none does, 0 if the
/// text does not parse).
pub fn line_of(text: &str, path: &str) -> usize {
    let Ok(doc) = Document::parse(text) else { return 0 };
    let mut node = Node::Table(doc.as_table());
    let mut offset = None;
    for part in split_path(path) {
        let Some((next, span)) = step(node, &part) else { break };
        offset = span.or(offset);
        node = next;
    }
    offset.map_or(1, |o| text[..o].matches('\n').count() + 1)
}

/// Follows one key or index; returns the child and the start of its span, if known.
fn step<'a>(node: Node<'a>, part: &Part) -> Option<(Node<'a>, Option<usize>)> {
    match (node, part) {
        (Node::Table(t), Part::Key(k)) => key_in(t.get_key_value(k)),
        (Node::Item(i), Part::Key(k)) => key_in(i.as_table_like()?.get_key_value(k)),
        (Node::Value(v), Part::Key(k)) => key_in(v.as_inline_table()?.get_key_value(k)),
        (Node::Item(i), Part::Index(n)) => match i.as_array_of_tables() {
            Some(tables) => tables.get(*n).map(|t| (Node::Table(t), t.span().map(|s| s.start))),
            None => index_in(i.as_array()?, *n),
        },
        (Node::Value(v), Part::Index(n)) => index_in(v.as_array()?, *n),
        (Node::Table(_), Part::Index(_)) => None,
    }
}

fn key_in<'a>(kv: Option<(&'a toml_edit::Key, &'a Item)>) -> Option<(Node<'a>, Option<usize>)> {
    kv.map(|(key, item)| (Node::Item(item), key.span().map(|s| s.start)))
}

fn index_in(array: &toml_edit::Array, n: usize) -> Option<(Node<'_>, Option<usize>)> {
    array.get(n).map(|v| (Node::Value(v), v.span().map(|s| s.start)))
}

/// Splits `a.b[2].c` into keys and indices.
fn split_path(path: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    for seg in path.split('.') {
        let (name, rest) = seg.split_once('[').map_or((seg, None), |(n, r)| (n, Some(r)));
        if !name.is_empty() {
            out.push(Part::Key(name));
        }
        for idx in rest.into_iter().flat_map(|r| r.split('[')) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Part::Index(i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::line_of;

    const TEXT: &str = "name = \"x\"\n\n[[phases]]\nname = \"a\"\nsteps = 3\n\n[[phases]]\nname = \"b\"\nmixture = { copy = -1.0 }\n[phases.optimizer]\nlr = -2.0\nbetas = [0.9,\n  1.5]\n";

    #[test]
    fn finds_keys_in_arrays_of_tables_subtables_inline_tables_and_arrays() {
        assert_eq!(line_of(TEXT, "name"), 1);
        assert_eq!(line_of(TEXT, "phases[0].steps"), 5);
        assert_eq!(line_of(TEXT, "phases[1].name"), 8);
        assert_eq!(line_of(TEXT, "phases[1].mixture.copy"), 9);
        assert_eq!(line_of(TEXT, "phases[1].optimizer.lr"), 11);
        assert_eq!(line_of(TEXT, "phases[1].optimizer.betas[1]"), 13);
    }

    #[test]
    fn a_missing_key_points_at_its_deepest_existing_parent() {
        assert_eq!(line_of(TEXT, "phases[1].optimizer.eps"), 10);
        assert_eq!(line_of(TEXT, "phases[0].lora"), 3);
    }
}
