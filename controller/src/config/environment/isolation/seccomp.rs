//! `seccomp = "default" | "unconfined" | "PATH"`: the profile file is read and checked
//! when the configuration is parsed, and its text is what agents receive, so agents
//! need no copy of it and every node applies the same profile.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

/// The runtime's own profile (Docker's default denies ~50 dangerous syscalls).
pub const DEFAULT: &str = "default";
/// No seccomp filter at all.
pub const UNCONFINED: &str = "unconfined";
/// Docker's own profile is ~20 KiB; a file much larger than this is not a profile.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// `seccomp` as configured, with a profile file already read.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "String")]
pub enum Seccomp {
    /// The runtime's default profile.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile file (relative paths are from the controller's working directory).
    Profile {
        /// The path as configured.
        path: String,
        /// Its JSON text, or why it cannot be used; reported by `check`.
        text: Result<String, String>,
    },
}

impl From<String> for Seccomp {
    fn from(value: String) -> Self {
        match value.as_str() {
            "" | DEFAULT => Seccomp::Default,
            UNCONFINED => Seccomp::Unconfined,
            _ => {
                let text = read_profile(Path::new(&value));
                Seccomp::Profile { path: value, text }
            }
        }
    }
}

impl Seccomp {
    /// What agents receive: `"default"`, `"unconfined"` or the profile's JSON text.
    pub fn to_proto(&self) -> String {
        match self {
            Seccomp::Default => DEFAULT.to_owned(),
            Seccomp::Unconfined => UNCONFINED.to_owned(),
            // Never sent with an error: the configuration is refused first.
            Seccomp::Profile { text, .. } => text.clone().unwrap_or_default(),
        }
    }

    /// Whether anything other than the runtime's default is asked for.
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }

    /// Why the profile cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        match self {
            Seccomp::Profile {
                path,
                text: Err(why),
            } => Some(format!("{path:?}: {why}")),
            _ => None,
        }
    }
}

/// The profile's text if the file is a plain file holding a seccomp profile.
fn read_profile(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("cannot read the profile: {e} (use \"default\", \"unconfined\" or a profile file)")
    })?;
    if !meta.is_file() {
        return Err("is not a file".to_owned());
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(format!(
            "is {} bytes; a seccomp profile is far smaller",
            meta.len()
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROFILE_BYTES).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the profile: {e}"))?;
    check_profile(&text)?;
    Ok(text)
}

/// A profile is a JSON object with a `defaultAction` (the runtime refuses others
/// only when a container is created, on every node at once).
fn check_profile(text: &str) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("is not JSON: {e}"))?;
    let Some(object) = value.as_object() else {
        return Err("must be a JSON object (a seccomp profile)".to_owned());
    };
    match object.get("defaultAction") {
        Some(serde_json::Value::String(action)) if action.starts_with("SCMP_ACT_") => {}
        _ => {
            return Err(
                "has no \"defaultAction\" like \"SCMP_ACT_ALLOW\"; is it a seccomp profile?"
                    .to_owned(),
            )
        }
    }
    for key in ["syscalls", "architectures"] {
        if object.get(key).is_some_and(|v| !v.is_array()) {
            return Err(format!("\"{key}\" must be a list"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_files() {
        assert_eq!(Seccomp::from(String::new()), Seccomp::Default);
        assert_eq!(Seccomp::from("default".to_owned()).to_proto(), "default");
        assert_eq!(
            Seccomp::from("unconfined".to_owned()).to_proto(),
            "unconfined"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deny-mkdir.json");
        let profile = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#;
        std::fs::write(&path, profile).unwrap();
        let seccomp = Seccomp::from(path.to_string_lossy().into_owned());
        assert_eq!(seccomp.problem(), None);
        assert_eq!(seccomp.to_proto(), profile);
    }

    #[test]
    fn bad_profiles_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let cases = [
            (write("a.json", "{nope"), "is not JSON"),
            (write("b.json", "[1]"), "JSON object"),
            (write("c.json", r#"{"syscalls":[]}"#), "defaultAction"),
            (
                write(
                    "d.json",
                    r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":{}}"#,
                ),
                "must be a list",
            ),
            (
                dir.path().join("missing").to_string_lossy().into_owned(),
                "cannot read",
            ),
            (dir.path().to_string_lossy().into_owned(), "not a file"),
            ("/dev/zero".to_owned(), "not a file"),
        ];
        for (path, want) in cases {
            let problem = Seccomp::from(path.clone()).problem().unwrap();
            assert!(problem.contains(want), "{path}: {problem}");
        }
    }
}
