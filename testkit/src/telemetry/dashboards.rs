//! Checks Grafana dashboards against a `/metrics` page: every metric a
//! panel or variable queries must exist there.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// PromQL words that are never metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression selects.
pub fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_quoted(&chars, i),
            '{' => i = skip_block(&chars, i, '{', '}'),
            '[' => i = skip_block(&chars, i, '[', ']'),
            '$' => {
                // A Grafana variable such as $__rate_interval.
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                // A number or duration: 0.99, 5m, 1e3.
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let called = chars.get(j) == Some(&'(');
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    if called {
                        i = skip_block(&chars, j, '(', ')');
                    }
                } else if !called && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.push(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

fn skip_quoted(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

fn skip_block(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_quoted(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The metrics a Grafana variable query names: `label_values(metric, label)`,
/// `query_result(expr)` or a plain expression.
fn variable_metrics(query: &str) -> Vec<String> {
    let q = query.trim();
    if let Some(inner) = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return match inner.rsplit_once(',') {
            Some((selector, _label)) => metric_names(selector),
            None => Vec::new(), // label_values(label): no metric named
        };
    }
    if let Some(inner) = q
        .strip_prefix("query_result(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return metric_names(inner);
    }
    if q.starts_with("label_names(") {
        return Vec::new();
    }
    metric_names(q)
}

/// Every (where, metric) a dashboard queries: panel targets' `expr`, and
/// template variables' `query`.
pub fn dashboard_metrics(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(dashboard, "dashboard", &mut out);
    if let Some(vars) = dashboard["templating"]["list"].as_array() {
        for var in vars {
            let name = var["name"].as_str().unwrap_or("?");
            let query = match &var["query"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Object(o) => o
                    .get("query")
                    .and_then(|q| q.as_str())
                    .unwrap_or_default()
                    .to_string(),
                _ => String::new(),
            };
            if var["type"] == "query" {
                for metric in variable_metrics(&query) {
                    out.push((format!("variable ${name}"), metric));
                }
            }
        }
    }
    out
}

fn walk(value: &serde_json::Value, place: &str, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::Object(map) => {
            let place = map
                .get("title")
                .and_then(|t| t.as_str())
                .map(|t| format!("panel '{t}'"))
                .unwrap_or_else(|| place.to_string());
            if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                let names = metric_names(expr);
                if names.is_empty() {
                    out.push((place.clone(), format!("<no metric in '{expr}'>")));
                }
                for name in names {
                    out.push((place.clone(), name));
                }
            }
            for (key, v) in map {
                if key != "templating" {
                    walk(v, &place, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                walk(v, place, out);
            }
        }
        _ => {}
    }
}

/// The dashboard files (`*.json`) in `dir`, sorted.
pub fn dashboard_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Parses every dashboard in `dir` and checks each metric it queries is in
/// `exposed`; returns every problem found (empty: all good).
pub fn check_dir(dir: &Path, exposed: &BTreeSet<String>) -> anyhow::Result<Vec<String>> {
    let files = dashboard_files(dir)?;
    anyhow::ensure!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let dashboard: serde_json::Value = match serde_json::from_str(&text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: not JSON: {e}", file.display()));
                continue;
            }
        };
        problems.extend(
            check(&dashboard, exposed)
                .into_iter()
                .map(|p| format!("{}: {p}", file.display())),
        );
    }
    Ok(problems)
}

/// Checks one parsed dashboard; returns its problems.
pub fn check(dashboard: &serde_json::Value, exposed: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    if dashboard["title"].as_str().is_none_or(str::is_empty) {
        problems.push("no title".to_string());
    }
    let used = dashboard_metrics(dashboard);
    if used.is_empty() {
        problems.push("queries no metric".to_string());
    }
    for (place, metric) in used {
        if !exposed.contains(&metric) {
            problems.push(format!(
                "{place} uses {metric}, which /metrics does not have"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_metric_names() {
        assert_eq!(
            metric_names(
                "histogram_quantile(0.99, sum by (le, phase) (rate(labssh_session_setup_seconds_bucket{phase!=\"x\"}[$__rate_interval])))"
            ),
            ["labssh_session_setup_seconds_bucket"]
        );
        assert_eq!(
            metric_names(
                "sum(rate(a_total{result=\"hit\"}[5m])) / ignoring(result) sum without (result) (rate(b_total[5m])) > bool 0.5"
            ),
            ["a_total", "b_total"]
        );
        assert_eq!(metric_names("up == 0 or vector(1)"), ["up"]);
        assert_eq!(
            variable_metrics("label_values(labssh_agent_capacity, agent)"),
            ["labssh_agent_capacity"]
        );
        assert!(variable_metrics("label_values(agent)").is_empty());
    }

    #[test]
    fn a_missing_metric_is_reported() {
        let exposed: BTreeSet<String> = ["labssh_a_total".to_string()].into();
        let good = serde_json::json!({
            "title": "t",
            "panels": [{"title": "p", "targets": [{"expr": "rate(labssh_a_total[1m])"}]}]
        });
        assert!(check(&good, &exposed).is_empty());
        let bad = serde_json::json!({
            "title": "t",
            "panels": [{"title": "p", "targets": [{"expr": "rate(labssh_gone_total[1m])"}]}],
            "templating": {"list": [{"name": "agent", "type": "query", "query": "label_values(labssh_nope, agent)"}]}
        });
        let problems = check(&bad, &exposed);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("labssh_gone_total"));
        assert!(problems[1].contains("labssh_nope"));
    }
}
