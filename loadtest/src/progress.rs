//! The progress bar. It draws on standard error and only on a terminal, so
//! piped output and CI logs stay clean.

use indicatif::{ProgressBar, ProgressStyle};

pub fn bar(length: u64, unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    let template =
        format!("{{elapsed_precise}} [{{bar:40.cyan/blue}}] {{pos}}/{{len}} {unit} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints a line above the bar, or to standard error when there is no bar
/// (not a terminal), so the line is never lost.
pub fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", line.as_ref());
    } else {
        bar.println(line);
    }
}
