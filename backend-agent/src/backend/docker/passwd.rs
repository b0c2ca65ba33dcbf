//! Gives the student a name inside the container: an /etc/passwd (and /etc/group)
//! entry for the environment's uid and gid when the image has none.
//!
//! Programs look their user up: bash prints "I have no name!", and OpenSSH's
//! sftp-server refuses to start ("No user found for uid"). The files are read and
//! written with Docker's archive API, done by the daemon, so it works in images
//! without a shell and with every capability dropped.

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::{body_full, Docker};
use futures::TryStreamExt;
use std::io::Read;

/// Adds `user` (uid, gid, home, shell) to the container's /etc/passwd and a group for
/// gid to /etc/group, unless entries with those ids exist. Best effort: failures are
/// logged, the container works without them.
pub async fn ensure_entries(
    docker: &Docker,
    container: &str,
    user: &str,
    ids: (u32, u32),
    home: &str,
    shell: &str,
) {
    let Some(files) = with_student(docker, container, user, ids, home, shell).await else {
        return;
    };
    let files: Vec<(&str, String)> = files
        .into_iter()
        .filter(|f| f.changed)
        .map(|f| (f.name, f.text))
        .collect();
    if files.is_empty() {
        return;
    }
    let archive = match super::archive::files(&files) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(container, error = %e, "cannot build /etc/passwd archive");
            return;
        }
    };
    let options = UploadToContainerOptionsBuilder::new().path("/etc").build();
    if let Err(e) = docker
        .upload_to_container(container, Some(options), body_full(archive.into()))
        .await
    {
        tracing::warn!(container, user, error = %e, "cannot add the student to /etc/passwd");
    }
}

/// One of /etc's user files with the student in it.
pub struct EtcFile {
    /// `passwd` or `group`.
    pub name: &'static str,
    /// Its text, the student's entry included.
    pub text: String,
    /// Whether the entry had to be added.
    pub changed: bool,
}

/// The container's /etc/passwd and /etc/group with `user` (uid, gid, home, shell) and a
/// group for gid added unless entries with those ids exist; `None` (logged) when they
/// are not plain files.
pub async fn with_student(
    docker: &Docker,
    container: &str,
    user: &str,
    ids: (u32, u32),
    home: &str,
    shell: &str,
) -> Option<[EtcFile; 2]> {
    let files = read_files(docker, container).await?;
    Some(add_student(&files, user, ids, home, shell))
}

/// An image's /etc/passwd and /etc/group as they are (`None`: the image has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFiles {
    /// /etc/passwd's text.
    pub passwd: Option<String>,
    /// /etc/group's text.
    pub group: Option<String>,
}

/// The container's /etc/passwd and /etc/group; `None` (logged) when they are not plain
/// files or cannot be read.
pub async fn read_files(docker: &Docker, container: &str) -> Option<ImageFiles> {
    read_files_or_why(docker, container).await.ok()
}

/// Why a container's files were not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// One of them is not a plain file (a symlink, say): it must not be overwritten.
    NotPlain,
    /// Docker did not hand them over.
    Failed,
}

/// The container's /etc/passwd and /etc/group, or why not (logged).
pub async fn read_files_or_why(docker: &Docker, container: &str) -> Result<ImageFiles, Unread> {
    let (passwd, group) = tokio::join!(
        read_file(docker, container, "/etc/passwd"),
        read_file(docker, container, "/etc/group"),
    );
    match (passwd, group) {
        (Ok(passwd), Ok(group)) => Ok(ImageFiles { passwd, group }),
        (Err(why), _) | (_, Err(why)) => {
            tracing::debug!(
                container,
                ?why,
                "/etc/passwd or /etc/group is not a plain file or cannot be read; left alone"
            );
            Err(why)
        }
    }
}

/// `files` with `user` (uid, gid, home, shell) and a group for gid added unless entries
/// with those ids exist.
pub fn add_student(
    files: &ImageFiles,
    user: &str,
    (uid, gid): (u32, u32),
    home: &str,
    shell: &str,
) -> [EtcFile; 2] {
    let file = |name, old: &Option<String>, new: Option<String>| match new {
        Some(text) => EtcFile {
            name,
            text,
            changed: true,
        },
        None => EtcFile {
            name,
            text: old.clone().unwrap_or_default(),
            changed: false,
        },
    };
    let new_passwd = with_entry(
        files.passwd.as_deref(),
        2,
        uid,
        &format!("{user}:x:{uid}:{gid}:{user}:{home}:{shell}"),
        "root:x:0:0:root:/root:/bin/sh",
    );
    let new_group = with_entry(
        files.group.as_deref(),
        2,
        gid,
        &format!("{user}:x:{gid}:"),
        "root:x:0:",
    );
    [
        file("passwd", &files.passwd, new_passwd),
        file("group", &files.group, new_group),
    ]
}

/// The file's text; `Ok(None)` when the container has no such file, `Err` when it is
/// something this must not overwrite (a symlink, say) or cannot be read.
async fn read_file(docker: &Docker, container: &str, path: &str) -> Result<Option<String>, Unread> {
    let options = DownloadFromContainerOptionsBuilder::new()
        .path(path)
        .build();
    let chunks: Vec<bytes::Bytes> = match docker
        .download_from_container(container, Some(options))
        .try_collect()
        .await
    {
        Ok(c) => c,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(_) => return Err(Unread::Failed),
    };
    let tar_bytes: Vec<u8> = chunks.concat();
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut entries = archive.entries().map_err(|_| Unread::Failed)?;
    let mut entry = entries
        .next()
        .ok_or(Unread::Failed)?
        .map_err(|_| Unread::Failed)?;
    if !entry.header().entry_type().is_file() {
        return Err(Unread::NotPlain);
    }
    let mut text = String::new();
    entry
        .read_to_string(&mut text)
        .map_err(|_| Unread::NotPlain)?;
    Ok(Some(text))
}

/// `existing` with `line` appended when no entry has `id` in field `field` (0-based);
/// `None` when nothing needs to change. A missing file starts with `root_line`.
fn with_entry(
    existing: Option<&str>,
    field: usize,
    id: u32,
    line: &str,
    root_line: &str,
) -> Option<String> {
    let text = existing.unwrap_or("");
    let id = id.to_string();
    let present = text
        .lines()
        .any(|l| l.split(':').nth(field) == Some(id.as_str()));
    if present {
        return None;
    }
    let mut out = String::from(text);
    if existing.is_none() || !text.lines().any(|l| l.starts_with("root:")) {
        out.push_str(root_line);
        out.push('\n');
    }
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_added_once() {
        let base = "root:x:0:0:root:/root:/bin/bash\nstaff:x:50:50::/:/bin/sh\n";
        let line = "alice:x:1000:1000:alice:/home/alice:/bin/bash";
        let out = with_entry(Some(base), 2, 1000, line, "root").unwrap();
        assert_eq!(out, format!("{base}{line}\n"));
        assert_eq!(with_entry(Some(&out), 2, 1000, line, "root"), None);
        // uid taken by someone else already: they keep it (the image knows best).
        assert_eq!(with_entry(Some(base), 2, 50, line, "root"), None);
        // No file at all: root first.
        let out = with_entry(None, 2, 1000, line, "root:x:0:0:root:/root:/bin/sh").unwrap();
        assert!(out.starts_with("root:x:0:0:"), "{out}");
        // No trailing newline in the image's file.
        let out = with_entry(Some("root:x:0:0::/:/bin/sh"), 2, 1000, line, "r").unwrap();
        assert_eq!(out, format!("root:x:0:0::/:/bin/sh\n{line}\n"));
    }
}
