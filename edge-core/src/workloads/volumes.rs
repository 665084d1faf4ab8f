//! Pod volumes on the host: emptyDir directories, and ConfigMap and Secret
//! volumes written as the kubelet's atomic writer does: the files go into a
//! fresh hidden directory, one rename of the `..data` symlink switches
//! readers over, and each top-level name is a symlink through `..data`, so
//! a container never reads half of an update.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

use edged::Volume;

/// Writes one volume (a no-op when its contents are already there).
pub(crate) fn write(v: &Volume) -> io::Result<()> {
    let dir = Path::new(&v.dir);
    std::fs::create_dir_all(dir)?;
    let Some(files) = &v.files else {
        return Ok(());
    };
    let stamp = format!("..{:016x}", crate::store::random_u64());
    let data = dir.join(&stamp);
    std::fs::create_dir(&data)?;
    let mut tops = BTreeSet::new();
    for (path, bytes, mode) in files {
        let rel = Path::new(path);
        let safe = rel.components().all(|c| matches!(c, Component::Normal(_)));
        let Some(Component::Normal(top)) = rel.components().next().filter(|_| safe) else {
            tracing::warn!(volume = %v.dir, path, "skipped: a volume path must be relative and stay inside");
            continue;
        };
        tops.insert(top.to_string_lossy().into_owned());
        let file = data.join(rel);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode & 0o7777))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, dir.join("..data"))?;
    for top in &tops {
        let link = dir.join(top);
        if link.symlink_metadata().is_err() {
            symlink(format!("..data/{top}"), &link)?;
        }
    }
    // What the previous contents had and these do not.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("..") {
            if name != "..data" && name != stamp {
                let _ = std::fs::remove_dir_all(&path);
            }
        } else if !tops.contains(&name) {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(dir: &Path, files: &[(&str, &str)]) -> Volume {
        Volume {
            dir: dir.to_string_lossy().into_owned(),
            files: Some(
                files
                    .iter()
                    .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec(), 0o644))
                    .collect(),
            ),
        }
    }

    #[test]
    fn an_update_replaces_the_files_and_removes_what_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        write(&volume(&dir, &[("mode", "fast"), ("nested/level", "3")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("mode")).unwrap(), "fast");
        assert_eq!(
            std::fs::read_to_string(dir.join("nested/level")).unwrap(),
            "3"
        );
        write(&volume(&dir, &[("mode", "slow")])).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("mode")).unwrap(), "slow");
        assert!(!dir.join("nested").exists());
        let hidden: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != "..data")
            .collect();
        assert_eq!(
            hidden.len(),
            1,
            "one generation of files is kept: {hidden:?}"
        );
    }

    #[test]
    fn a_path_that_leaves_the_volume_is_not_written() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cfg");
        write(&volume(
            &dir,
            &[("../escape", "x"), ("/abs", "y"), ("ok", "z")],
        ))
        .unwrap();
        assert!(!tmp.path().join("escape").exists());
        assert_eq!(std::fs::read_to_string(dir.join("ok")).unwrap(), "z");
        let empty = Volume {
            dir: tmp.path().join("scratch").to_string_lossy().into_owned(),
            files: None,
        };
        write(&empty).unwrap();
        assert!(tmp.path().join("scratch").is_dir());
    }
}
