//! The report page: a title, intro paragraphs and sections of prose, figures (inline SVG from
//! the chart functions) and tables, rendered as one self-contained HTML file (inline CSS, no
//! scripts, fonts or links) and written atomically as `index.html`.

use std::fs;
use std::path::{Path, PathBuf};

use super::table::Table;
use super::ReportError;
use crate::fs::write_atomic;

/// The page's style sheet.
const CSS: &str = "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
figure{margin:1.5em 0}figure svg{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.92em;color:#555;margin-top:.4em}
table{border-collapse:collapse;margin:1.5em 0;font-size:.92em}caption{text-align:left;color:#555;margin-bottom:.4em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}th{background:#f4f4f4}tbody tr:nth-child(even){background:#fafafa}";

/// A chart with its caption.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figure {
    /// SVG markup from one of this module's chart functions; embedded as is, not escaped.
    pub svg: String,
    /// Shown under the chart.
    pub caption: String,
}

/// A headed section: paragraphs, then figures, then tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// The section's heading.
    pub heading: String,
    /// Plain-text paragraphs.
    pub paragraphs: Vec<String>,
    /// Figures, in order.
    pub figures: Vec<Figure>,
    /// Tables, in order.
    pub tables: Vec<Table>,
}

/// The whole report page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// The page's title and top heading.
    pub title: String,
    /// Plain-text paragraphs under the title.
    pub intro: Vec<String>,
    /// The sections, in order.
    pub sections: Vec<Section>,
}

impl Page {
    /// The page as one HTML document; every text is escaped, figures are inlined.
    pub fn to_html(&self) -> String {
        let title = escape(&self.title);
        let sections: String = self.sections.iter().map(Section::to_html).collect();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n\
             <style>\n{CSS}\n</style>\n</head>\n<body>\n<h1>{title}</h1>\n{}{sections}</body>\n</html>\n",
            paragraphs(&self.intro)
        )
    }

    /// Writes the page to `dir/index.html` atomically, creating `dir` if needed; returns the path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ReportError> {
        fs::create_dir_all(dir).map_err(|source| ReportError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join("index.html");
        write_atomic(&path, self.to_html().as_bytes())?;
        Ok(path)
    }

    /// Writes the page (see [`Page::write`]), `tables[0]` as `dir/{csv}`, and the title,
    /// intro and `tables` in Markdown as `dir/summary.md`; returns the page's path.
    pub fn write_with_summary(&self, dir: &Path, csv: &str, tables: &[Table]) -> Result<PathBuf, ReportError> {
        let path = self.write(dir)?;
        if let Some(first) = tables.first() {
            write_atomic(&dir.join(csv), first.to_csv().as_bytes())?;
        }
        let md: Vec<String> = tables.iter().map(Table::to_markdown).collect();
        let summary = format!("# {}\n\n{}\n\n{}\n", self.title, self.intro.join("\n\n"), md.join("\n"));
        write_atomic(&dir.join("summary.md"), summary.as_bytes())?;
        Ok(path)
    }
}

impl Section {
    /// The section as an HTML `<section>`.
    fn to_html(&self) -> String {
        let figures: String = self.figures.iter().map(Figure::to_html).collect();
        let tables: String = self.tables.iter().map(Table::to_html).collect();
        format!(
            "<section>\n<h2>{}</h2>\n{}{figures}{tables}</section>\n",
            escape(&self.heading),
            paragraphs(&self.paragraphs)
        )
    }
}

impl Figure {
    /// The figure as an HTML `<figure>` with the SVG inline.
    fn to_html(&self) -> String {
        format!("<figure>\n{}<figcaption>{}</figcaption>\n</figure>\n", self.svg, escape(&self.caption))
    }
}

/// Each text as an escaped `<p>`.
fn paragraphs(texts: &[String]) -> String {
    texts.iter().map(|t| format!("<p>{}</p>\n", escape(t))).collect()
}

/// `text` with the HTML-special characters `& < > " '` escaped.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
