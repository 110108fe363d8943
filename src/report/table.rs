//! Tables of text cells and their three renderings: HTML (for the page), Markdown (for
//! `summary.md`) and CSV (for `fits.csv`).

use super::html::escape;

/// A captioned table of text cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Says what the table shows; not part of the CSV.
    pub caption: String,
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells, in column order.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as a GitHub-flavoured Markdown table under its caption; `|` in cells is
    /// escaped and line breaks become spaces.
    pub fn to_markdown(&self) -> String {
        let line = |cells: &[String]| {
            format!("| {} |\n", cells.iter().map(|c| markdown_cell(c)).collect::<Vec<_>>().join(" | "))
        };
        let mut out =
            if self.caption.is_empty() { String::new() } else { format!("{}\n\n", markdown_cell(&self.caption)) };
        out += &line(&self.header);
        out += &format!("|{}\n", " --- |".repeat(self.header.len().max(1)));
        self.rows.iter().for_each(|row| out += &line(row));
        out
    }

    /// The header and rows as CSV (RFC 4180): cells holding a comma, quote or line break are
    /// quoted, with quotes doubled; every record ends with `\n`.
    pub fn to_csv(&self) -> String {
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|cells| cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }

    /// The table as an HTML `<table>` with every cell escaped.
    pub(crate) fn to_html(&self) -> String {
        let cells =
            |tag: &str, row: &[String]| row.iter().map(|c| format!("<{tag}>{}</{tag}>", escape(c))).collect::<String>();
        let body: String = self.rows.iter().map(|row| format!("<tr>{}</tr>\n", cells("td", row))).collect();
        format!(
            "<table>\n<caption>{}</caption>\n<thead><tr>{}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n",
            escape(&self.caption),
            cells("th", &self.header)
        )
    }
}

/// `cell` made safe inside a Markdown table row.
fn markdown_cell(cell: &str) -> String {
    cell.replace('|', "\\|").replace("\r\n", " ").replace(['\n', '\r'], " ")
}

/// `cell` as one CSV field, quoted if it must be.
fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}
